#!/usr/bin/env python3
"""
The WebAuthn test vectors of app/tests/unit/auth_webauthn.c, and the seeds of
app/tests/fuzz/corpus/webauthn/, made outside Kiln with python3-cryptography
and a CBOR encoder of a few lines (below), so that the C code is checked
against bytes it did not produce. Not run by the build.

    webauthn_vectors.py               print the C block
    webauthn_vectors.py --write FILE  replace the block between the BEGIN/END
                                      VECTORS markers of FILE (the unit test)
    webauthn_vectors.py --corpus DIR  write the fuzz seeds into DIR

Everything is deterministic (fixed private keys, RFC 6979 ECDSA, a fixed
seed for the RSA primes), so a re-run gives the same bytes.

The public vectors come from duo-labs/py_webauthn's test suite
(tests/test_verify_registration_response.py and
tests/test_verify_authentication_response.py): a "none" registration and
ES256, RS256 and EdDSA assertions, with their rp id, origin and challenge.
Their COSE keys are converted to SubjectPublicKeyInfo here, and also wrapped
verbatim in registrations of ours, so Kiln's COSE decoding meets keys that
another implementation encoded.
"""
import base64
import hashlib
import json
import random
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

RP_ID = "example.com"
ORIGIN = "https://example.com"
ORIGIN2 = "https://login.example.com"
CHALLENGE = "dGhlLXNlcnZlci1pc3N1ZWQtY2hhbGxlbmdlLTE"  # base64url("the-server-issued-challenge-1")
AAGUID = bytes.fromhex("adce000235bcc60a648b0b25f1f05503")

UP, UV, BE, BS, AT, ED = 0x01, 0x04, 0x08, 0x10, 0x40, 0x80

# ---- a CBOR encoder: enough for attestation objects, and for breaking them --


class Raw(bytes):
    """Bytes put into the output as they are."""


class Pairs(list):
    """A map as a list of (key, value): may repeat a key."""


def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor(v):
    if isinstance(v, Raw):
        return bytes(v)
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, list) and not isinstance(v, Pairs):
        return head(4, len(v)) + b"".join(cbor(x) for x in v)
    pairs = list(v.items()) if isinstance(v, dict) else v
    return head(5, len(pairs)) + b"".join(cbor(k) + cbor(x) for k, x in pairs)


def uncbor(b, i=0):
    """Decode the item at b[i:] (ints, strings, arrays, maps): (value, next)."""
    major, ai = b[i] >> 5, b[i] & 31
    i += 1
    if ai < 24:
        n = ai
    else:
        w = 1 << (ai - 24)
        n = int.from_bytes(b[i:i + w], "big")
        i += w
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        s = b[i:i + n]
        return (s if major == 2 else s.decode()), i + n
    if major == 4:
        out = []
        for _ in range(n):
            x, i = uncbor(b, i)
            out.append(x)
        return out, i
    if major == 5:
        out = {}
        for _ in range(n):
            k, i = uncbor(b, i)
            out[k], i = uncbor(b, i)
        return out, i
    raise ValueError(major)


# ---- keys: fixed, so the vectors and the fuzz seeds are stable --------------


def is_prime(n):
    if n % 2 == 0:
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def rsa_key(bits, seed):
    rnd = random.Random(seed)

    def prime():
        while True:
            p = rnd.getrandbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
            if p % 65537 != 1 and is_prime(p):
                return p

    p, q = prime(), prime()
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    pub = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q), pub).private_key()


EC_KEY = ec.derive_private_key(0x1D3C5A0B9E8F7A6B5C4D3E2F1A0B9C8D7E6F5A4B3C2D1E0F1A2B3C4D5E6F7081,
                               ec.SECP256R1())
EC_OTHER = ec.derive_private_key(0x2E4D6B1CAF9E8B7C6D5E4F3A2B1C0D9E8F7A6B5C4D3E2F102B3C4D5E6F708192,
                                 ec.SECP256R1())
P384_KEY = ec.derive_private_key(0x3F5E7C2DB0AF9C8D7E6F5A4B3C2D1E0F, ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"kiln ed25519").digest())
RSA_KEY = rsa_key(2048, "kiln rsa 2048")
RSA_SMALL = rsa_key(1024, "kiln rsa 1024")


def spki(pub):
    return pub.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def be(n, size):
    return n.to_bytes(size, "big")


def cose_ec(pub, alg=-7, crv=1, kty=2, size=32):
    n = pub.public_numbers()
    return {1: kty, 3: alg, -1: crv, -2: be(n.x, size), -3: be(n.y, size)}


def cose_rsa(pub, alg=-257):
    n = pub.public_numbers()
    return {1: 3, 3: alg, -1: be(n.n, (n.n.bit_length() + 7) // 8), -2: be(n.e, 3)}


def cose_okp(pub, alg=-8, crv=6):
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {1: 1, 3: alg, -1: crv, -2: raw}


def cose_to_spki(cose):
    k, _ = uncbor(cose)
    if k[1] == 2:
        x, y = int.from_bytes(k[-2], "big"), int.from_bytes(k[-3], "big")
        return spki(ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key())
    if k[1] == 3:
        n, e = int.from_bytes(k[-1], "big"), int.from_bytes(k[-2], "big")
        return spki(rsa.RSAPublicNumbers(e, n).public_key())
    return spki(ed25519.Ed25519PublicKey.from_public_bytes(k[-2]))


def sign(key, data):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


# ---- WebAuthn structures ----------------------------------------------------


def client_data(typ, challenge=CHALLENGE, origin=ORIGIN, cross=False):
    # The key order and the compact form are what browsers send (the
    # "limited verification algorithm" of WebAuthn L2 section 5.8.1.2).
    d = {"type": typ, "challenge": challenge, "origin": origin}
    if cross is not None:
        d["crossOrigin"] = cross
    return json.dumps(d, separators=(",", ":")).encode()


def auth_data(flags, count, rp_id=RP_ID, cred=None, ext=None, trailing=b""):
    out = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", count)
    if cred is not None:
        cred_id, cose, id_len = cred
        out += AAGUID + struct.pack(">H", len(cred_id) if id_len is None else id_len)
        out += cred_id + (cose if isinstance(cose, bytes) else cbor(cose))
    if ext is not None:
        out += cbor(ext)
    return out + trailing


def cred(name, cose, id_len=None):
    return (hashlib.sha256(name.encode()).digest()[:16], cose, id_len)


def att_obj(ad, fmt="none", stmt=None):
    return cbor({"fmt": fmt, "attStmt": {} if stmt is None else stmt, "authData": ad})


def assertion(key, cd, ad):
    return ad, sign(key, ad + hashlib.sha256(cd).digest())


def b64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# ---- the vectors ------------------------------------------------------------

CD_CREATE = client_data("webauthn.create")
CD_GET = client_data("webauthn.get")
CD_GET2 = client_data("webauthn.get", origin=ORIGIN2)
ES_COSE = cose_ec(EC_KEY.public_key())
RSA_COSE = cose_rsa(RSA_KEY.public_key())
ED_COSE = cose_okp(ED_KEY.public_key())
ES_CRED = cred("es256", ES_COSE)

GOOD_AD_ES = auth_data(UP | UV | AT, 0, cred=ES_CRED)


def bad_point():
    c = dict(ES_COSE)
    y = bytearray(c[-3])
    y[-1] ^= 1
    c[-3] = bytes(y)
    return c


def registrations():
    """(name, clientDataJSON, attestationObject)"""
    ad = GOOD_AD_ES
    big_cred = (hashlib.sha256(b"big").digest() * 32, ES_COSE, None)  # 1024 bytes
    cut = auth_data(UP | AT, 0, cred=ES_CRED)
    return [
        ("reg_es256", CD_CREATE, att_obj(ad)),
        ("reg_rs256", CD_CREATE, att_obj(auth_data(UP | AT | BE, 5, cred=cred("rs256", RSA_COSE)))),
        ("reg_eddsa", client_data("webauthn.create", origin=ORIGIN2),
         att_obj(auth_data(UP | UV | AT | ED | BE | BS, 1,
                           cred=(hashlib.sha256(b"eddsa").digest() * 2, ED_COSE, None),
                           ext={"credProtect": 2}))),
        ("reg_packed", CD_CREATE,
         att_obj(ad, "packed", {"alg": -7, "sig": bytes(70), "x5c": [bytes(40)]})),
        ("reg_wrong_type", client_data("webauthn.get"), att_obj(ad)),
        ("reg_challenge", client_data("webauthn.create", challenge=CHALLENGE + "x"), att_obj(ad)),
        ("reg_origin", client_data("webauthn.create", origin="https://evil.example"), att_obj(ad)),
        ("reg_origin_port", client_data("webauthn.create", origin=ORIGIN + ":443"), att_obj(ad)),
        ("reg_cross_origin", client_data("webauthn.create", cross=True), att_obj(ad)),
        ("reg_cross_origin_string", client_data("webauthn.create", cross="false"), att_obj(ad)),
        ("reg_cd_no_cross_origin", client_data("webauthn.create", cross=None), att_obj(ad)),
        ("reg_rp_id", CD_CREATE, att_obj(auth_data(UP | AT, 0, rp_id="evil.example", cred=ES_CRED))),
        ("reg_no_up", CD_CREATE, att_obj(auth_data(UV | AT, 0, cred=ES_CRED))),
        ("reg_bs_without_be", CD_CREATE, att_obj(auth_data(UP | AT | BS, 0, cred=ES_CRED))),
        ("reg_no_at", CD_CREATE, att_obj(auth_data(UP, 0))),
        ("reg_alg_es384", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("p384", cose_ec(P384_KEY.public_key(), -35, 2,
                                                                  size=48))))),
        ("reg_alg_kty_mismatch", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("x", cose_rsa(RSA_KEY.public_key(), -7))))),
        ("reg_alg_missing", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("x", {k: v for k, v in ES_COSE.items() if k != 3})))),
        ("reg_point_off_curve", CD_CREATE, att_obj(auth_data(UP | AT, 0, cred=cred("x", bad_point())))),
        ("reg_ec_short_x", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("x", {**ES_COSE, -2: ES_COSE[-2][1:]})))),
        ("reg_rsa_1024", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("x", cose_rsa(RSA_SMALL.public_key()))))),
        ("reg_okp_x25519", CD_CREATE, att_obj(auth_data(UP | AT, 0, cred=cred("x", {**ED_COSE, -1: 4})))),
        ("reg_cose_text_label", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("x", {**ES_COSE, "kid": b"1"})))),
        ("reg_cose_dup_label", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("x", Pairs(list(ES_COSE.items()) + [(3, -7)]))))),
        ("reg_ad_truncated", CD_CREATE, att_obj(ad[:36])),
        ("reg_ad_cut_in_header", CD_CREATE, att_obj(ad[:37 + 17])),
        ("reg_ad_cut_in_key", CD_CREATE, att_obj(cut[:-1])),
        ("reg_cred_id_beyond", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=cred("x", ES_COSE, id_len=16 + len(cbor(ES_COSE)) + 1)))),
        ("reg_cred_id_1023", CD_CREATE,
         att_obj(auth_data(UP | AT, 0, cred=(big_cred[0][:1023], ES_COSE, None)))),
        ("reg_cred_id_1024", CD_CREATE, att_obj(auth_data(UP | AT, 0, cred=big_cred))),
        ("reg_cred_id_empty", CD_CREATE, att_obj(auth_data(UP | AT, 0, cred=(b"", ES_COSE, None)))),
        ("reg_trailing_byte", CD_CREATE, att_obj(ad + b"\x00")),
        ("reg_trailing_map", CD_CREATE, att_obj(ad + cbor({"credProtect": 2}))),
        ("reg_ed_nothing", CD_CREATE, att_obj(auth_data(UP | AT | ED, 0, cred=ES_CRED))),
        ("reg_ed_array", CD_CREATE, att_obj(auth_data(UP | AT | ED, 0, cred=ES_CRED, ext=[1]))),
        ("reg_ed_two_maps", CD_CREATE,
         att_obj(auth_data(UP | AT | ED, 0, cred=ES_CRED, ext={"a": 1}, trailing=cbor({})))),
        ("reg_none_with_stmt", CD_CREATE, att_obj(ad, "none", {"sig": b"x"})),
        ("reg_stmt_not_map", CD_CREATE, att_obj(ad, "packed", [1])),
        ("reg_no_auth_data", CD_CREATE, cbor({"fmt": "none", "attStmt": {}})),
        ("reg_unknown_key", CD_CREATE, cbor({"fmt": "none", "attStmt": {}, "authData": ad, "x": 1})),
        ("reg_fmt_not_text", CD_CREATE, cbor({"fmt": 1, "attStmt": {}, "authData": ad})),
        ("reg_fmt_31", CD_CREATE, att_obj(ad, "f" * 31, {})),
        ("reg_fmt_long", CD_CREATE, att_obj(ad, "f" * 32, {})),
        ("reg_auth_data_text", CD_CREATE, cbor({"fmt": "none", "attStmt": {}, "authData": "x"})),
        ("reg_att_trailing", CD_CREATE, att_obj(ad) + b"\x00"),
        ("reg_att_indefinite", CD_CREATE, b"\xbf" + att_obj(ad)[1:] + b"\xff"),
        ("reg_att_dup_fmt", CD_CREATE,
         cbor(Pairs([("fmt", "none"), ("attStmt", {}), ("authData", ad), ("fmt", "none")]))),
        ("reg_att_huge_array", CD_CREATE,
         cbor({"fmt": "packed", "attStmt": {"x5c": Raw(b"\x9b\x00\x00\x00\x10\x00\x00\x00\x00")},
               "authData": ad})),
        ("reg_att_deep", CD_CREATE,
         cbor({"fmt": "packed", "attStmt": {"x": Raw(b"\x81" * 40 + b"\x00")}, "authData": ad})),
        ("reg_att_tag", CD_CREATE,
         cbor({"fmt": "packed", "attStmt": {"x": Raw(b"\xd8\x18\x40")}, "authData": ad})),
        ("reg_att_array", CD_CREATE, cbor(["none", {}, ad])),
    ]


def assertions():
    """(name, clientDataJSON, authenticatorData, signature)"""
    other_rp = auth_data(UP, 3, rp_id="evil.example")
    v = [
        ("as_es256", CD_GET, *assertion(EC_KEY, CD_GET, auth_data(UP | UV, 0))),
        ("as_rs256", CD_GET, *assertion(RSA_KEY, CD_GET, auth_data(UP, 6))),
        ("as_eddsa", CD_GET2, *assertion(ED_KEY, CD_GET2,
                                         auth_data(UP | UV | ED | BE | BS, 2, ext={"credProtect": 2}))),
        ("as_other_key", CD_GET, *assertion(EC_OTHER, CD_GET, auth_data(UP | UV, 0))),
        ("as_wrong_type", CD_CREATE, *assertion(EC_KEY, CD_CREATE, auth_data(UP, 1))),
        ("as_challenge", client_data("webauthn.get", challenge="AAAA"),
         *assertion(EC_KEY, client_data("webauthn.get", challenge="AAAA"), auth_data(UP, 1))),
        ("as_origin", client_data("webauthn.get", origin="http://example.com"),
         *assertion(EC_KEY, client_data("webauthn.get", origin="http://example.com"),
                    auth_data(UP, 1))),
        ("as_cross_origin", client_data("webauthn.get", cross=True),
         *assertion(EC_KEY, client_data("webauthn.get", cross=True), auth_data(UP, 1))),
        ("as_rp_id", CD_GET, *assertion(EC_KEY, CD_GET, other_rp)),
        ("as_no_up", CD_GET, *assertion(EC_KEY, CD_GET, auth_data(UV, 1))),
        ("as_bs_without_be", CD_GET, *assertion(EC_KEY, CD_GET, auth_data(UP | BS, 1))),
        ("as_trailing", CD_GET, *assertion(EC_KEY, CD_GET, auth_data(UP, 1, trailing=b"\x00"))),
        ("as_at_set", CD_GET, *assertion(EC_KEY, CD_GET, auth_data(UP | AT, 1, cred=ES_CRED))),
        ("as_ed_not_map", CD_GET, *assertion(EC_KEY, CD_GET, auth_data(UP | ED, 1, ext=[1]))),
    ]
    return v


# From duo-labs/py_webauthn's tests: rp id "localhost", origin
# "http://localhost:5000"; challenge as the server issued it.
PUBLIC_REG = (
    "TwN7n4WTyGKLc4ZY-qGsFqKnHM4nglqsyV0ICJlN2TO9XiRyFtrkaDwUvsql-gkLJXP6fnF1MlrZ53Mm4R7Cvw",
    "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoiVHdON240V1R5R0tMYzRaWS1xR3NGcUtuSE00bmdscX"
    "N5VjBJQ0psTjJUTzlYaVJ5RnRya2FEd1V2c3FsLWdrTEpYUDZmbkYxTWxyWjUzTW00UjdDdnciLCJvcmlnaW4iOiJodHRw"
    "Oi8vbG9jYWxob3N0OjUwMDAiLCJjcm9zc09yaWdpbiI6ZmFsc2V9",
    "o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YVjESZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2NFAAAAFwAAAAAA"
    "AAAAAAAAAAAAAAAAQPctcQPE5oNRRJk_nO_371mf7qE7qIodzr0eOf6ACvnMB1oQG165dqutoi1U44shGezu5_gkTjmOPeJO"
    "0N8a7P-lAQIDJiABIVggSFbUJF-42Ug3pdM8rDRFu_N5oiVEysPDB6n66r_7dZAiWCDUVnB39FlGypL-qAoIO9xWHtJygo2j"
    "fDmHl-_eKFRLDA",
    "9y1xA8Tmg1FEmT-c7_fvWZ_uoTuoih3OvR45_oAK-cwHWhAbXrl2q62iLVTjiyEZ7O7n-CROOY494k7Q3xrs_w",
    "pQECAyYgASFYIEhW1CRfuNlIN6XTPKw0RbvzeaIlRMrDwwep-uq_-3WQIlgg1FZwd_RZRsqS_qgKCDvcVh7ScoKNo3w5h5fv"
    "3ihUSww",
)

# (name, challenge, clientDataJSON, authenticatorData, signature, COSE key,
#  stored count, require UV, new count)
PUBLIC_ASSERTIONS = [
    ("pub_es256",
     "xi30GPGAFYRxVDpY1sM10DaLzVQG66nv-_7RUazH0vI2YvG8LYgDEnvN5fZZNVuvEDuMi9te3VLqb42N0fkLGA",
     "eyJjaGFsbGVuZ2UiOiJ4aTMwR1BHQUZZUnhWRHBZMXNNMTBEYUx6VlFHNjZudi1fN1JVYXpIMHZJMll2RzhMWWdERW52TjVm"
     "WlpOVnV2RUR1TWk5dGUzVkxxYjQyTjBma0xHQSIsImNsaWVudEV4dGVuc2lvbnMiOnt9LCJoYXNoQWxnb3JpdGhtIjoiU0hB"
     "LTI1NiIsIm9yaWdpbiI6Imh0dHA6Ly9sb2NhbGhvc3Q6NTAwMCIsInR5cGUiOiJ3ZWJhdXRobi5nZXQifQ",
     "SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MBAAAATg",
     "MEUCIGisVZOBapCWbnJJvjelIzwpixxIwkjCCb5aCHafQu68AiEA88v-2pJNNApPFwAKFiNuf82-2hBxYW5kGwVweeoxCwo",
     "pQECAyYgASFYIIeDTe-gN8A-zQclHoRnGFWN8ehM1b7yAsa8I8KIvmplIlgg4nFGT5px8o6gpPZZhO01wdy9crDSA_Ngtkx0"
     "vGpvPHI", 77, False, 78),
    ("pub_rs256",
     "iPmAi1Pp1XL6oAgq3PWZtZPnZa1zFUDoGbaQ0_KvVG1lF2s3Rt_3o4uSzccy0tmcTIpTTT4BU1T-I4maavndjQ",
     "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoiaVBtQWkxUHAxWEw2b0FncTNQV1p0WlBuWmExekZVRG9HYmFR"
     "MF9LdlZHMWxGMnMzUnRfM280dVN6Y2N5MHRtY1RJcFRUVDRCVTFULUk0bWFhdm5kalEiLCJvcmlnaW4iOiJodHRwOi8vbG9j"
     "YWxob3N0OjUwMDAiLCJjcm9zc09yaWdpbiI6ZmFsc2V9",
     "SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MFAAAAAQ",
     "iOHKX3erU5_OYP_r_9HLZ-CexCE4bQRrxM8WmuoKTDdhAnZSeTP0sjECjvjfeS8MJzN1ArmvV0H0C3yy_FdRFfcpUPZzdZ7b"
     "BcmPh1XPdxRwY747OrIzcTLTFQUPdn1U-izCZtP_78VGw9pCpdMsv4CUzZdJbEcRtQuRS03qUjqDaovoJhOqEBmxJn9Wu8tB"
     "i_Qx7A33RbYjlfyLm_EDqimzDZhyietyop6XUcpKarKqVH0M6mMrM5zTjp8xf3W7odFCadXEJg-ERZqFM0-9Uup6kJNLbr6C"
     "5J4NDYmSm3HCSA6lp2iEiMPKU8Ii7QZ61kybXLxsX4w4Dm3fOLjmDw",
     "pAEDAzkBACBZAQDfV20epzvQP-HtcdDpX-cGzdOxy73WQEvsU7Dnr9UWJophEfpngouvgnRLXaEUn_d8HGkp_HIx8rrpkx4B"
     "Vs6X_B6ZjhLlezjIdJbLbVeb92BaEsmNn1HW2N9Xj2QM8cH-yx28_vCjf82ahQ9gyAr552Bn96G22n8jqFRQKdVpO-f-bvpv"
     "aP3IQ9F5LCX7CUaxptgbog1SFO6FI6ob5SlVVB00lVXsaYg8cIDZxCkkENkGiFPgwEaZ7995SCbiyCpUJbMqToLMgojPkAhW"
     "eyktu7TlK6UBWdJMHc3FPAIs0lH_2_2hKS-mGI1uZAFVAfW1X-mzKL0czUm2P1UlUox7IUMBAAE", 0, True, 1),
    ("pub_eddsa",
     "eZ4eeA3O4jy5FIzqDaSJ6JDNGu0bBc5zI1DjQ_kLso1WNqkG6k5mCYf1dtQhVUiBWZWlZkzR5MFeeWCpJRUNXw",
     "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoiZVo0ZWVBM080ank1Rkl6cURhU0o2SkROR3UwYkJjNXpJMURq"
     "UV9rTHNvMVdOcWtHNms1bUNZZjFkdFFoVlVpQldaV2xaa3pSNU1GZWVXQ3BKUlVOWHciLCJvcmlnaW4iOiJodHRwOi8vbG9j"
     "YWxob3N0OjUwMDAiLCJjcm9zc09yaWdpbiI6ZmFsc2V9",
     "SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MBAAAABw",
     "RRWV8mYDRvK7YdQgdtZD4pJ2dh1D_IWZ_D6jsZo6FHJBoenbj0CVT5nA20vUzlRhN4R6dOEUHmUwP1F8eRBhBg",
     "pAEBAycgBiFYIMz6_SUFLiDid2Yhlq0YboyJ-CDrIrNpkPUGmJp4D3Dp", 3, False, 7),
]


# ---- output -----------------------------------------------------------------


def c_bytes(name, b):
    # A string literal with an explicit size holds no NUL (C17 6.7.9p14):
    # four characters a byte instead of six for 0x.., in a file of vectors.
    rows = [b[i:i + 20] for i in range(0, len(b), 20)] or [b""]
    body = "\n".join('    "' + "".join(f"\\x{x:02x}" for x in r) + '"' for r in rows)
    return f"static const uint8_t {name}[{len(b)}] =\n{body};"


def c_string(name, s):
    text = s.decode()
    chunks = [text[i:i + 80] for i in range(0, len(text), 80)] or [""]
    esc = [c.replace("\\", "\\\\").replace('"', '\\"') for c in chunks]
    return f"static const char {name}[] =\n" + "\n".join(f'    "{c}"' for c in esc) + ";"


class Emitter:
    """Bytes shared by several vectors are written once, under the name of
    their first user; the others get a #define."""

    def __init__(self):
        self.out, self.seen = [], {}

    def emit(self, name, b, fmt):
        if (fmt, b) in self.seen:
            self.out.append(f"#define {name} {self.seen[fmt, b]}")
        else:
            self.seen[fmt, b] = name
            self.out.append(fmt(name, b))

    def cd(self, name, b):
        self.emit(name, b, c_string)

    def bytes(self, name, b):
        self.emit(name, b, c_bytes)


def block():
    e = Emitter()
    e.out += [
        "/* Generated by app/tests/unit/webauthn_vectors.py: do not edit by hand. */",
        f'#define RP_ID "{RP_ID}"',
        f'#define ORIGIN "{ORIGIN}"',
        f'#define ORIGIN2 "{ORIGIN2}"',
        f'#define CHALLENGE "{CHALLENGE}"',
        c_bytes("aaguid", AAGUID),
        c_bytes("spki_es256", spki(EC_KEY.public_key())),
        c_bytes("spki_rs256", spki(RSA_KEY.public_key())),
        c_bytes("spki_eddsa", spki(ED_KEY.public_key())),
        c_bytes("spki_other_es256", spki(EC_OTHER.public_key())),
    ]
    for name, cd, ao in registrations():
        e.cd(name + "_cd", cd)
        e.bytes(name + "_att", ao)
    for name, cd, ad, sig in assertions():
        e.cd(name + "_cd", cd)
        e.bytes(name + "_ad", ad)
        e.bytes(name + "_sig", sig)
    ch, cd, ao, cid, cose = PUBLIC_REG
    e.out += [f'#define PUB_REG_CHALLENGE \\\n    "{ch}"']
    e.cd("pub_reg_cd", b64u(cd))
    e.out += [
        c_bytes("pub_reg_att", b64u(ao)),
        c_bytes("pub_reg_cred_id", b64u(cid)),
        c_bytes("pub_reg_spki", cose_to_spki(b64u(cose))),
    ]
    for name, ch, cd, ad, sig, cose, stored, uv, new in PUBLIC_ASSERTIONS:
        e.out.append(f'#define {name.upper()}_CHALLENGE \\\n    "{ch}"')
        e.cd(name + "_cd", b64u(cd))
        e.out += [
            c_bytes(name + "_ad", b64u(ad)),
            c_bytes(name + "_sig", b64u(sig)),
            c_bytes(name + "_spki", cose_to_spki(b64u(cose))),
            # The public COSE key, verbatim, in a "none" registration of ours.
            c_bytes(name + "_reg_att", att_obj(auth_data(UP | AT, 0, cred=cred(name, b64u(cose))))),
        ]
    return "\n".join(e.out) + "\n"


def corpus(d):
    """Fuzz seeds, in the layout of app/tests/fuzz/webauthn.c."""
    import os

    def parts(*ps):
        out = b""
        for p in ps[:-1]:
            out += struct.pack(">H", len(p)) + p
        return out + ps[-1]

    regs = {n: (cd, ao) for n, cd, ao in registrations()}
    seeds = {}
    for n in ("reg_es256", "reg_rs256", "reg_eddsa", "reg_packed", "reg_cose_dup_label",
              "reg_ed_two_maps"):
        cd, ao = regs[n]
        seeds[n] = bytes([0x10 if n == "reg_es256" else 0x00]) + parts(cd, ao)
    asserts = {n: (cd, ad, sig) for n, cd, ad, sig in assertions()}
    # byte 0: 1 | alg index << 1 | input key << 3 | require UV << 4 | stored count << 5
    for n, first in (("as_es256", 0x01 | 0 << 1 | 0x10), ("as_rs256", 0x01 | 1 << 1 | 5 << 5),
                     ("as_eddsa", 0x01 | 2 << 1 | 1 << 5)):
        cd, ad, sig = asserts[n]
        seeds[n] = bytes([first]) + parts(cd, ad, sig, b"")
    cd, ad, sig = asserts["as_es256"]
    seeds["as_es256_input_key"] = bytes([0x01 | 0x08]) + parts(cd, ad, sig, spki(EC_KEY.public_key()))
    os.makedirs(d, exist_ok=True)
    for n, b in seeds.items():
        with open(os.path.join(d, n.replace("_", "-")), "wb") as f:
            f.write(b)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--corpus":
        corpus(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = sys.argv[2]
        src = open(path).read()
        begin, end = "/* BEGIN VECTORS */\n", "/* END VECTORS */\n"
        i, j = src.index(begin) + len(begin), src.index(end)
        open(path, "w").write(src[:i] + block() + src[j:])
    else:
        sys.stdout.write(block())


if __name__ == "__main__":
    main()
