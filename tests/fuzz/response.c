/* Response parsing (proto/message.c response_parse, response_get_token): what a client
 * library makes of whatever a socket's other end sends. Everything it hands out must be
 * there and of the promised type. */
#include <errno.h>

#include "frame.h"
#include "fuzz.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        Response resp;
        TokenResponse t;
        char err[256];
        int r;

        if (size > FRAME_MAX)
                return -1;
        r = response_parse(data, size, &resp, err, sizeof(err));
        if (r < 0) {
                FUZZ_ASSERT(r == -EBADMSG && err[0] != '\0');
                return 0;
        }
        FUZZ_ASSERT(r == 0 && json_is_object(resp.root));
        if (!resp.ok) {
                FUZZ_ASSERT(resp.message);
                FUZZ_ASSERT((unsigned) resp.code < _BROKER_ERR_MAX);
                FUZZ_ASSERT(response_get_token(&resp, &t, err, sizeof(err)) == -EINVAL);
        } else {
                r = response_get_token(&resp, &t, err, sizeof(err));
                if (r == 0)
                        FUZZ_ASSERT(t.token && t.token[0] && t.kid && t.kid[0] && t.jti &&
                                    t.jti[0]);
                else
                        FUZZ_ASSERT(r == -EBADMSG && err[0] != '\0');
        }
        response_done(&resp);
        return 0;
}
