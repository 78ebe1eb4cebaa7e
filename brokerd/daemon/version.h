#pragma once

#define BROKERD_VERSION "0.2.0"
