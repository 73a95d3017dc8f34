#!/bin/sh
# SigV4 signing: Kiln's signer against botocore (Debian's python3-botocore)
# signing the same two requests in the same run: a Secrets Manager call with
# a session token (Authorization header) and an RDS IAM token (presigned
# query). Ratios, not absolute times (the machine is shared).
#
#   bench/aws.sh [N]      N signings of each (default 20000)
set -eu
cd "$(dirname "$0")/.."
n=${1:-20000}
make --no-print-directory build/libkiln.a >/dev/null
mkdir -p build/bench
PKGS="libuv openssl jansson libpq sqlite3 hiredis libcurl expat"
cc -O2 -D_GNU_SOURCE -iquote app/src -o build/bench/sigv4_bench bench/sigv4_bench.c \
    build/libkiln.a $(pkg-config --libs $PKGS) -pthread
kiln=$(build/bench/sigv4_bench "$n")
boto=$(/usr/bin/python3 - "$n" <<'PY'
import datetime, sys, time
import botocore.auth, botocore.session
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
n = int(sys.argv[1])
fixed = datetime.datetime(2026, 3, 14, 15, 9, 26)
class Clock(datetime.datetime):
    @classmethod
    def utcnow(cls): return fixed
    @classmethod
    def now(cls, tz=None): return fixed if tz is None else fixed.replace(tzinfo=tz)
class Mod: datetime = Clock
botocore.auth.datetime = Mod
creds = Credentials("ASIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "T" * 800)
body = b'{"SecretId":"arn:aws:secretsmanager:eu-west-3:123456789012:secret:kiln-db-AbCdEf"}'
signer = botocore.auth.SigV4Auth(creds, "secretsmanager", "eu-west-3")
t0 = time.perf_counter()
for _ in range(n):
    req = AWSRequest("POST", "https://secretsmanager.eu-west-3.amazonaws.com/", data=body,
                     headers={"X-Amz-Target": "secretsmanager.GetSecretValue",
                              "Content-Type": "application/x-amz-json-1.1"})
    signer.add_auth(req)
t1 = time.perf_counter()
rds = botocore.session.get_session().create_client(
    "rds", region_name="eu-west-3", aws_access_key_id=creds.access_key,
    aws_secret_access_key=creds.secret_key, aws_session_token=creds.token)
t2 = time.perf_counter()
for _ in range(n):
    rds.generate_db_auth_token("kiln.proxy-abc.eu-west-3.rds.amazonaws.com", 5432, "kiln_app")
t3 = time.perf_counter()
print(f"header {(t1 - t0) / n * 1e9:.0f}\ntoken {(t3 - t2) / n * 1e9:.0f}")
PY
)
echo "SigV4, $n signings each (ns per signing; lower is better)"
printf '%-8s %10s %10s %8s\n' what kiln botocore ratio
for what in header token; do
    k=$(echo "$kiln" | awk -v w=$what '$1 == w {print $2}')
    b=$(echo "$boto" | awk -v w=$what '$1 == w {print $2}')
    printf '%-8s %10s %10s %7.1fx\n' "$what" "$k" "$b" "$(echo "$b $k" | awk '{print $1 / $2}')"
done
