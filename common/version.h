/* The release: one definition for brokerd (--version, the status op) and brokerctl (--version). */
#pragma once

#define BROKERD_VERSION "0.2.0"
