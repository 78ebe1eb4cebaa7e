/* The JWS algorithms the broker signs with, and their names as JOSE spells them. Below every
 * other part of keys/ and policy/: a rule names an algorithm, a key has one. */
#pragma once

typedef enum Alg {
        ALG_EDDSA,
        ALG_ES256,
        ALG_RS256,
        _ALG_MAX,
} Alg;

/* A rule's algorithm when it names none, and the series every configuration keeps a key in.
 * ES256: AWS STS, Google, Vault and SPIFFE JWT-SVID accept it, while AWS STS and JWT-SVID refuse
 * EdDSA (Azure wants RS256, which a rule asks for). */
#define ALG_DEFAULT ALG_ES256

/* "EdDSA", "ES256", "RS256"; NULL for anything else. */
const char *alg_to_string(Alg a);
/* Alg, or -EINVAL for a name that is not one of them (case matters, as in JOSE). */
int alg_from_string(const char *s);
