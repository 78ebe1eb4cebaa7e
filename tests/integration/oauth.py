"""A real OAuth 2.0 authorization server for the integration tests: oidc-provider (Node), run
by node/oauth_server.mjs, against which brokerd acts as a client. This module makes its TLS
certificates, starts and stops it, and drives its control listener (counters, fault injection,
token lifetime, introspection).

Uses only the standard library and Debian's python3-cryptography, and the `node` on PATH with
the packages of node/package.json installed (npm ci --prefix tests/integration/node).

    pki = make_pki(dirpath)   # CA + server certificate for 127.0.0.1, and an untrusted pair
    with OAuthServer(tmpdir, jwks_path, "https://broker.test", "https://as.test",
                     clients=[{"client_id": "c", "client_secret": "s",
                               "token_endpoint_auth_method": "client_secret_basic",
                               "grant_types": ["client_credentials"], "scope": "read"}]) as srv:
        srv.token_endpoint, srv.ca_file, srv.stats(), srv.fault("status", status=503, count=1)

The server's stderr (stderr()) always holds two oidc-provider warnings: "Unsupported runtime"
(9.x wants Node 22; it works on Node 20) and "already parsed request body" (the token request is
read first for the counters and faults). Neither is an error.

Client metadata is oidc-provider's (RFC 7591 names). A private_key_jwt client without its own
jwks/jwks_uri is given the broker's JWKS file, re-read on every request, so key rotation is seen
at once. Tokens are opaque; introspect() says which client and subject a token was issued to.
"""

import datetime
import ipaddress
import os
import socket
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nodeserver import NODE_DIR, NodeServer  # noqa: F401 (NODE_DIR: for callers)


def free_port():
    """An unused loopback TCP port (free when asked; another process may take it after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- PKI ------------------------------------------------------------------------------------

def _write(path, data, mode):
    # Created with its final mode so a key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # O_CREAT's mode is filtered by the umask; this is not


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer, public_key):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _make_ca(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    # keyCertSign and the key identifiers are required by strict verifiers (OpenSSL's
    # X509_STRICT, Python 3.13's default context), not only by the letter of RFC 5280.
    cert = (_builder(_name(common_name), _name(common_name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_server_cert(ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name("127.0.0.1"), ca_cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def make_pki(dirpath):
    """Writes a test CA and a server certificate for 127.0.0.1/localhost it signed, and the same
    again under a second, untrusted CA. Returns the paths: ca, ca_key, cert, key, untrusted_ca,
    untrusted_ca_key, untrusted_cert, untrusted_key. Certificates are 0644, keys 0600."""
    os.makedirs(dirpath, exist_ok=True)
    paths = {}
    for prefix, ca_name in (("", "brokerd test CA"), ("untrusted_", "brokerd UNTRUSTED test CA")):
        ca_key, ca_cert = _make_ca(ca_name)
        key, cert = _make_server_cert(ca_key, ca_cert)
        for name, data, mode in (("ca", _cert_pem(ca_cert), 0o644),
                                 ("ca_key", _key_pem(ca_key), 0o600),
                                 ("cert", _cert_pem(cert), 0o644),
                                 ("key", _key_pem(key), 0o600)):
            path = os.path.join(dirpath, f"{prefix}{name}.pem")
            _write(path, data, mode)
            paths[prefix + name] = path
    return paths


# --- the server -----------------------------------------------------------------------------

class OAuthServer(NodeServer):
    """node/oauth_server.mjs as a context manager (nodeserver.py: start, stop, stderr()).
    Listeners bind to 127.0.0.1 on ports the server picks itself (no window for another process
    to take them); issuer, token_endpoint and the ports are known once start() returns, before
    the broker needs them.

    tls: the provider is served over https with a certificate from make_pki's CA (ca_file);
         without it, plain http and ca_file is None.
    untrusted: also serve the same provider on a second port with a certificate from the
         untrusted CA (untrusted_token_endpoint), for testing that the broker refuses it.
    """

    NAME = "oauth"

    def __init__(self, tmpdir, broker_jwks_path, broker_issuer, subject_audience, clients,
                 tls=True, untrusted=True, access_token_ttl=3600):
        if untrusted and not tls:
            raise ValueError("the untrusted listener needs tls=True")
        super().__init__(tmpdir)
        self.broker_jwks_path = broker_jwks_path
        self.broker_issuer = broker_issuer
        self.subject_audience = subject_audience
        self.clients = clients
        self.tls = tls
        self.untrusted = untrusted
        self.access_token_ttl = access_token_ttl
        self.pki = None
        self.ca_file = None
        self.untrusted_ca_file = None
        self.issuer = None
        self.token_endpoint = None
        self.untrusted_token_endpoint = None
        self.port = None
        self.untrusted_port = None

    def start(self):
        config = {
            "port": 0,
            "control_port": 0,
            "broker_jwks": self.broker_jwks_path,
            "broker_issuer": self.broker_issuer,
            "subject_audience": self.subject_audience,
            "access_token_ttl": self.access_token_ttl,
            "clients": self.clients,
        }
        if self.tls:
            self.pki = make_pki(os.path.join(self.tmpdir, "oauth-pki"))
            self.ca_file = self.pki["ca"]
            config.update(cert=self.pki["cert"], key=self.pki["key"])
            if self.untrusted:
                self.untrusted_ca_file = self.pki["untrusted_ca"]
                config.update(untrusted_port=0, untrusted_cert=self.pki["untrusted_cert"],
                              untrusted_key=self.pki["untrusted_key"])
        ready = self._launch(config)
        self.issuer = ready["issuer"]
        self.token_endpoint = ready["token_endpoint"]
        self.port = ready["port"]
        self.untrusted_port = ready["untrusted_port"]
        if self.untrusted_port is not None:
            path = urllib.parse.urlsplit(self.token_endpoint).path
            self.untrusted_token_endpoint = f"https://127.0.0.1:{self.untrusted_port}{path}"
        return self

    # --- control listener ---------------------------------------------------------------

    def stats(self):
        """{"token_requests", "by_grant", "by_client", "request_ids" (last 200 X-Request-Id
        values), "last_auth": {"client_id", "method": basic|post|jwt|none}, "last_params"
        (the form of the last token request)}. Every request that reached the token endpoint
        counts, faulted ones included."""
        return self._control("GET", "/stats")

    def reset(self):
        """Zero the counters and clear any fault."""
        return self._control("POST", "/reset", {})

    def fault(self, mode, **kw):
        """Make token requests fail: mode is none | status (status=, body=, headers=) | slow
        (delay_ms=) | malformed | no_token | error200 | oversize (size=) | close; count=K
        limits it to the next K token requests."""
        return self._control("POST", "/fault", {"mode": mode, **kw})

    def set_ttl(self, seconds):
        """expires_in (and real lifetime) of access tokens issued from now on, all grants."""
        return self._control("POST", "/ttl", {"seconds": seconds})

    def introspect(self, token):
        """{"active": False} or {"active": True, "sub", "client_id", "scope", "aud",
        "grant_type", "exp"}; sub is the broker JWT's subject for token exchange and
        jwt-bearer, the client_id for client_credentials."""
        return self._control("GET", "/introspect?token=" + urllib.parse.quote(token, safe=""))
