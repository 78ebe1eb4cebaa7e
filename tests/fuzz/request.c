/* Request validation (proto/message.c request_parse), both op sets: the first input byte picks
 * the socket (workload, admin, or a set with both or neither), the rest is a frame body.
 * An accepted request must hold what the parser promises (op of that socket, bounded fields,
 * valid scopes); a refused one must leave a message and id the daemon can answer with, in one
 * frame a client parses back as that bad_request. What was accepted, encoded again, must be
 * accepted again as the same request. */
#include <errno.h>
#include <stdbool.h>

#include "frame.h"
#include "fuzz.h"
#include "message.h"

static const unsigned opsets[] = {OPSET_WORKLOAD, OPSET_ADMIN, OPSET_WORKLOAD | OPSET_ADMIN, 0};

/* What the daemon sends back for a refused request, and what a client makes of it. */
static void check_error_answer(const char *err, json_t *id)
{
        json_t *msg = response_new_error(BROKER_ERR_BAD_REQUEST, err, id);
        Response resp;
        char rerr[256];
        char *buf = NULL;
        size_t len = 0;

        FUZZ_ASSERT(msg);
        FUZZ_ASSERT(message_encode_frame(msg, &buf, &len) == 0);
        FUZZ_ASSERT(frame_peek((const uint8_t *) buf, len, NULL) == 1);
        FUZZ_ASSERT(response_parse(buf + FRAME_HEADER_SIZE, len - FRAME_HEADER_SIZE, &resp, rerr,
                                   sizeof(rerr)) == 0);
        FUZZ_ASSERT(!resp.ok && resp.code == BROKER_ERR_BAD_REQUEST && resp.message);
        FUZZ_ASSERT(json_equal(json_object_get(resp.root, "id"), id) || !id);
        response_done(&resp);
        free(buf);
        json_decref(msg);
}

static void check_accepted(const Request *r, unsigned opset)
{
        const char *name = op_to_string(r->op);

        FUZZ_ASSERT(name);
        FUZZ_ASSERT(r->root && json_is_object(r->root));
        FUZZ_ASSERT(!r->id || json_is_string(r->id) || json_is_integer(r->id));
        FUZZ_ASSERT(!r->id || !json_is_string(r->id) || json_string_length(r->id) <= REQUEST_ID_MAX);
        FUZZ_ASSERT(strcmp(json_string_value(json_object_get(r->root, "op")), name) == 0);
        if (r->op == OP_PING)
                FUZZ_ASSERT(opset != 0);
        else if (r->op == OP_TOKEN || r->op == OP_JWKS || r->op == OP_WHOAMI)
                FUZZ_ASSERT(opset & OPSET_WORKLOAD);
        else
                FUZZ_ASSERT(opset & OPSET_ADMIN);

        if (r->op == OP_TOKEN) {
                FUZZ_ASSERT(r->audience && r->audience[0] && strlen(r->audience) <= AUDIENCE_MAX);
                FUZZ_ASSERT(r->n_scopes <= SCOPES_MAX);
                for (size_t i = 0; i < r->n_scopes; i++) {
                        FUZZ_ASSERT(scope_token_valid(r->scopes[i]));
                        FUZZ_ASSERT(strlen(r->scopes[i]) <= SCOPE_MAX);
                        for (size_t j = 0; j < i; j++)
                                FUZZ_ASSERT(strcmp(r->scopes[i], r->scopes[j]) != 0);
                }
                FUZZ_ASSERT(!r->has_ttl || (r->ttl >= 1 && r->ttl <= TTL_MAX));
        } else
                FUZZ_ASSERT(!r->audience && r->n_scopes == 0 && !r->has_ttl);
        if (r->op == OP_REVOKE)
                FUZZ_ASSERT(r->kid && r->kid[0] && strlen(r->kid) <= KID_MAX);
        else
                FUZZ_ASSERT(!r->kid);
        FUZZ_ASSERT(!r->alg || r->op == OP_ROTATE);
}

/* Encoded again (compact, as the daemon's own JSON would be), the request is the same. */
static void check_round_trip(const Request *r, unsigned opset)
{
        Request again;
        json_t *id = NULL;
        char err[256];
        char *buf = NULL;
        size_t len = 0;

        if (message_encode_frame(r->root, &buf, &len) < 0)
                return; /* a longer encoding (escapes) may not fit one frame */
        FUZZ_ASSERT(request_parse(buf + FRAME_HEADER_SIZE, len - FRAME_HEADER_SIZE, opset, &again,
                                  &id, err, sizeof(err)) == 0);
        FUZZ_ASSERT(!id);
        FUZZ_ASSERT(again.op == r->op && again.n_scopes == r->n_scopes &&
                    again.has_ttl == r->has_ttl && (!r->has_ttl || again.ttl == r->ttl));
        FUZZ_ASSERT(json_equal(again.root, r->root));
        request_done(&again);
        free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        Request req;
        json_t *id = (json_t *) 1;
        char err[256];
        unsigned opset;
        int r;

        if (size < 1 || size - 1 > FRAME_MAX)
                return -1; /* the frame decoder never passes such a body on */
        opset = opsets[data[0] % 4];

        r = request_parse(data + 1, size - 1, opset, &req, &id, err, sizeof(err));
        if (r < 0) {
                FUZZ_ASSERT(r == -EBADMSG);
                FUZZ_ASSERT(err[0] != '\0' && strlen(err) < sizeof(err));
                FUZZ_ASSERT(!id || json_is_string(id) || json_is_integer(id));
                check_error_answer(err, id);
                json_decref(id);
                return 0;
        }
        FUZZ_ASSERT(r == 0 && !id);
        check_accepted(&req, opset);
        check_round_trip(&req, opset);
        request_done(&req);
        return 0;
}
