/* Framing: a 4-byte big-endian length N (1..FRAME_MAX), then N bytes of UTF-8 JSON.
 * The length is checked before any body byte is buffered. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_SIZE 4u
#define FRAME_MAX         65536u

/* Checks a decoded length: 0 when 1 <= n <= FRAME_MAX, -EMSGSIZE when larger, -EBADMSG for 0. */
int frame_length_check(uint32_t n);

/* Looks at the start of a receive buffer. Returns 0 when more bytes are needed (and, once the
 * header is complete, sets *ret_body_len so the caller can size its buffer), 1 when a whole
 * frame is present (body at buf + FRAME_HEADER_SIZE, length *ret_body_len), or the negative
 * error of frame_length_check() for a bad header. */
int frame_peek(const uint8_t *buf, size_t len, uint32_t *ret_body_len);

void frame_put_header(uint8_t out[FRAME_HEADER_SIZE], uint32_t body_len);

/* Blocking helpers for clients. The timeout covers the whole call (milliseconds, <0 = none).
 * Errors: -ETIMEDOUT, -ECONNRESET (peer closed, including mid-frame), -EMSGSIZE/-EBADMSG for a
 * bad header from the peer, or the -errno of the failing syscall. */
int frame_send(int fd, const void *body, size_t len, int timeout_ms);
int frame_recv(int fd, char **ret_body, size_t *ret_len, int timeout_ms);
