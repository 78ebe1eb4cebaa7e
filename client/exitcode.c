#include "exitcode.h"

#include "broker.h"

int exit_code_for_status(int broker_status)
{
        switch (broker_status) {
        case BROKER_OK:
                return EXIT_OK;
        case BROKER_E_BAD_REQUEST:
                return EXIT_USAGE;
        case BROKER_E_UNAVAILABLE:
                return EXIT_UNAVAILABLE;
        case BROKER_E_DENIED:
                return EXIT_DENIED;
        /* Apart from denied: a script that gives up on 3 should retry on 5. */
        case BROKER_E_RATE_LIMITED:
                return EXIT_RATE_LIMITED;
        default:
                return EXIT_OTHER;
        }
}
