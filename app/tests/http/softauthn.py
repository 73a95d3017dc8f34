"""A software WebAuthn authenticator for the black-box tests of the passkey
routes (the browser test uses Chromium's own virtual authenticator): keys
from python3-cryptography, CBOR written by hand (what a "none" attestation
needs), client data as browsers write it. The encoder is the small one of
app/tests/unit/webauthn_vectors.py, kept here so the suites stay apart."""

import base64
import hashlib
import json
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor(v):
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return _head(3, len(b)) + b
    if isinstance(v, list):
        return _head(4, len(v)) + b"".join(cbor(x) for x in v)
    return _head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())


class Authenticator:
    """One discoverable credential (ES256 or EdDSA) for rp_id."""

    def __init__(self, rp_id, alg=-7):
        self.rp_id, self.alg = rp_id, alg
        self.key = ec.generate_private_key(ec.SECP256R1()) if alg == -7 \
            else ed25519.Ed25519PrivateKey.generate()
        self.cred_id = os.urandom(16)
        self.count = 0
        self.user_handle = None

    def _cose(self):
        if self.alg == -7:
            n = self.key.public_key().public_numbers()
            return {1: 2, 3: -7, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")}
        from cryptography.hazmat.primitives import serialization
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw)
        return {1: 1, 3: -8, -1: 6, -2: raw}

    def _auth_data(self, flags, attested=False):
        out = hashlib.sha256(self.rp_id.encode()).digest() + bytes([flags])
        out += struct.pack(">I", self.count)
        if attested:
            out += bytes(16) + struct.pack(">H", len(self.cred_id)) + self.cred_id
            out += cbor(self._cose())
        return out

    def _sign(self, data):
        if self.alg == -7:
            return self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(data)

    @staticmethod
    def client_data(typ, challenge, origin, cross=False):
        return json.dumps({"type": typ, "challenge": challenge, "origin": origin,
                           "crossOrigin": cross}, separators=(",", ":")).encode()

    def create(self, options, origin, flags=UP | UV | AT):
        """The JSON a browser posts after navigator.credentials.create."""
        self.user_handle = unb64u(options["user"]["id"])
        cd = self.client_data("webauthn.create", options["challenge"], origin)
        self.count += 1
        ao = cbor({"fmt": "none", "attStmt": {}, "authData": self._auth_data(flags, True)})
        return {"id": b64u(self.cred_id), "rawId": b64u(self.cred_id), "type": "public-key",
                "response": {"clientDataJSON": b64u(cd), "attestationObject": b64u(ao)}}

    def get(self, options, origin, flags=UP | UV, count_step=1, typ="webauthn.get"):
        """The JSON a browser posts after navigator.credentials.get."""
        cd = self.client_data(typ, options["challenge"], origin)
        self.count += count_step
        ad = self._auth_data(flags)
        sig = self._sign(ad + hashlib.sha256(cd).digest())
        return {"id": b64u(self.cred_id), "rawId": b64u(self.cred_id), "type": "public-key",
                "response": {"clientDataJSON": b64u(cd), "authenticatorData": b64u(ad),
                             "signature": b64u(sig),
                             "userHandle": b64u(self.user_handle) if self.user_handle else None}}
