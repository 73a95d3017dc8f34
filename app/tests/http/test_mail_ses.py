"""EMAIL_PROVIDER=ses (app/src/mail/mail.c): account mail sent with Amazon
SES v1 SendEmail, signed with Kiln's own SigV4, against the SES stand-in of
awsfake.py (``SesFake``: the signature recomputed with botocore, the form
fields checked, the messages recorded, refusals on demand).

What is checked:
  * the stand-in accepts what botocore's own SES client sends and refuses
    a wrong signature (so that what it accepts from Kiln is what AWS
    would);
  * sign-up (POST /auth/password/register, 202) makes a mail job that
    calls SendEmail, correctly signed (temporary credentials: the session
    token signed too), with Source = EMAIL_FROM, the address as the one
    destination, the subject "Confirm your email address" and a text in
    UTF-8 holding the verification link; that link's token verifies
    (POST /auth/password/verify, 200);
  * a MessageRejected answer ends the job dead at once (one call, never
    retried, the jobs table says dead with SES's reason); a 503 and a
    Throttling answer are retried (a second call comes and is accepted, and
    its link works);
  * neither the text (its link, its token) nor the AWS secret key or
    session token ever appears in kiln's stdout or stderr;
  * the configuration: ses needs EMAIL_FROM and a region.

Every mode (KILN_STORES). On PostgreSQL the module's instance gets a
database of its own (own_db): any instance runs any queued mail job.
"""

import json
import re
import sqlite3
import time
import urllib.parse
import uuid

import botocore.config
import botocore.exceptions
import botocore.session
import pytest

import authkit as ak
import awsfake
import awskit
import kilnhttp

SLOW = 3 if kilnhttp.SANITIZED else 1
PASSWORD = "violet-kettle-harbour"
FROM = "Kiln Test <no-reply@kiln.test>"


@pytest.fixture(scope="module")
def store():
    return awsfake.CredentialStore()


@pytest.fixture(scope="module")
def creds(store):
    return store.temporary(lifetime=6 * 3600)


@pytest.fixture(scope="module")
def ses(store):
    with awsfake.SesFake(store) as fake:
        yield fake


@pytest.fixture(scope="module")
def srv(own_db, ses, creds, module_kiln):
    return ak.start_kiln(module_kiln, JOB_POLL_MS=100, EMAIL_PROVIDER="ses", EMAIL_FROM=FROM,
                         **awskit.aws_env(creds=creds, AWS_ENDPOINT_URL_SES=ses.base_url),
                         **own_db())


def addr(tag="ses"):
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def register(srv, email):
    r = ak.call(srv, "POST", "/auth/password/register",
                json_body={"email": email, "password": PASSWORD}, timeout=30 * SLOW)
    assert r.status == 202, r
    return r


def verify(srv, token):
    return ak.call(srv, "POST", "/auth/password/verify", json_body={"token": token},
                   timeout=30 * SLOW)


def token_of(msg):
    m = re.search(r"[?&]token=([A-Za-z0-9_-]+)", msg["text"])
    assert m, f"no link with a token in: {msg['text']!r}"
    return m.group(1)


def mail_jobs(srv, state):
    """(state, attempts, last_error) of the module's accounts.mail jobs in
    ``state``, read behind kiln's back."""
    sql = ("SELECT state, attempts, last_error FROM jobs WHERE kind = 'accounts.mail' "
           f"AND state = '{state}' ORDER BY id")
    url = srv.env.get("DATABASE_URL")
    if url:
        db = urllib.parse.urlsplit(url).path.lstrip("/")
        out = kilnhttp.services().psql(
            f"SELECT coalesce(json_agg(json_build_array(state, attempts, last_error)), '[]') "
            f"FROM ({sql}) q", db=db)
        return [tuple(r) for r in json.loads(out)]
    con = sqlite3.connect(srv.env["DB_PATH"], timeout=10)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def assert_clean(srv, creds, *texts):
    """No mail text, link or token, and no AWS secret, in kiln's output."""
    secrets = [creds.secret_key, creds.token]
    for text in texts:
        token = re.search(r"token=([A-Za-z0-9_-]+)", text)
        secrets += [line for line in text.splitlines() if len(line) > 20]
        if token:
            secrets.append(token.group(1))
    ak.assert_not_in_logs(srv, *secrets)


# --------------------------------------------------------------------------
# the stand-in itself
# --------------------------------------------------------------------------

def botocore_ses(creds, endpoint):
    return botocore.session.get_session().create_client(
        "ses", region_name=awsfake.REGION, endpoint_url=endpoint,
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
        config=botocore.config.Config(retries={"max_attempts": 1}))


def test_stand_in_takes_botocore_and_refuses_a_wrong_signature(store):
    creds = store.static()
    to = addr("boto")
    with awsfake.SesFake(store) as fake:
        out = botocore_ses(creds, fake.base_url).send_email(
            Source=FROM, Destination={"ToAddresses": [to]},
            Message={"Subject": {"Data": "Hello", "Charset": "UTF-8"},
                     "Body": {"Text": {"Data": "Grüße & more\nline two", "Charset": "UTF-8"}}})
        [msg] = fake.messages_to(to)
        assert out["MessageId"] == msg["message_id"]
        assert (msg["source"], msg["subject"], msg["text"]) == \
            (FROM, "Hello", "Grüße & more\nline two")
        assert msg["access_key"] == creds.access_key and fake.bad_forms == []

        wrong = awsfake.Creds(creds.access_key, creds.secret_key[:-1] +
                              ("y" if creds.secret_key.endswith("x") else "x"))
        with pytest.raises(botocore.exceptions.ClientError) as e:
            botocore_ses(wrong, fake.base_url).send_email(
                Source=FROM, Destination={"ToAddresses": [to]},
                Message={"Subject": {"Data": "x"}, "Body": {"Text": {"Data": "y"}}})
        assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert len(fake.failures) == 1 and fake.messages_to(to) == [msg]

        fake.reject(to=to)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            botocore_ses(creds, fake.base_url).send_email(
                Source=FROM, Destination={"ToAddresses": [to]},
                Message={"Subject": {"Data": "x"}, "Body": {"Text": {"Data": "y"}}})
        assert e.value.response["Error"]["Code"] == "MessageRejected"
        assert [s[:2] for s in fake.sends_to(to)] == [(200, None), (400, "MessageRejected")]


# --------------------------------------------------------------------------
# kiln
# --------------------------------------------------------------------------

def test_signup_mail_goes_through_ses_and_its_link_verifies(srv, ses, creds):
    email = addr()
    register(srv, email)
    [msg] = ses.wait_for(email, timeout=15 * SLOW)
    assert ses.failures == [] and ses.bad_forms == []
    assert msg["access_key"] == creds.access_key
    assert msg["source"] == FROM and msg["to"] == [email]
    assert msg["subject"] == "Confirm your email address"
    assert msg["subject_charset"] == "UTF-8" and msg["text_charset"] == "UTF-8"
    token = token_of(msg)
    assert f"{srv.env['PUBLIC_URL']}/auth/password/verify?token={token}" in msg["text"]
    r = verify(srv, token)
    assert r.status == 200 and r.json() == {"status": "verified"}, r
    assert [s[:2] for s in ses.sends_to(email)] == [(200, None)]
    assert_clean(srv, creds, msg["text"])


def test_message_rejected_ends_the_job_dead(srv, ses, creds):
    email = addr("rejected")
    ses.reject(to=email)
    register(srv, email)
    ses.wait_sends(email, 1, timeout=15 * SLOW)
    # A retry would come after about a second (the jobs' first backoff).
    time.sleep(3.5 * SLOW)
    assert [s[:2] for s in ses.sends_to(email)] == [(400, "MessageRejected")]
    assert ses.messages_to(email) == [] and ses.failures == []
    [(state, attempts, error)] = mail_jobs(srv, "dead")
    assert attempts == 1, (state, attempts, error)
    assert "SendEmail answered 400 MessageRejected: Email address is not verified" in error, error
    dead = [r for r in awskit.log_records(srv)
            if r.get("message", "").startswith("jobs: a job is dead")]
    assert len(dead) == 1 and "MessageRejected" in dead[0].get("error", ""), dead
    assert_clean(srv, creds)


@pytest.mark.parametrize("refusal", ["unavailable", "throttle"])
def test_unavailable_and_throttled_are_retried(srv, ses, creds, refusal):
    email = addr(refusal)
    getattr(ses, refusal)(to=email)
    register(srv, email)
    [msg] = ses.wait_for(email, timeout=15 * SLOW)
    want = (503, "ServiceUnavailable") if refusal == "unavailable" else (400, "Throttling")
    assert [s[:2] for s in ses.sends_to(email)] == [want, (200, None)]
    assert ses.failures == [] and ses.bad_forms == []
    r = verify(srv, token_of(msg))
    assert r.status == 200, r
    assert_clean(srv, creds, msg["text"])


def test_nothing_of_any_mail_in_the_output(srv, ses, creds):
    assert ses.messages, "no message reached the stand-in"
    assert_clean(srv, creds, *[m["text"] for m in ses.messages if m["source"] == FROM])
    assert mail_jobs(srv, "queued") == []


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------

@pytest.mark.parametrize("missing, line", [
    ("EMAIL_FROM", "config: EMAIL_PROVIDER=ses needs EMAIL_FROM"),
    ("AWS_REGION", "config: EMAIL_PROVIDER=ses needs AWS_REGION"),
])
def test_ses_needs_a_sender_and_a_region(missing, line):
    env = dict(EMAIL_PROVIDER="ses", EMAIL_FROM=FROM, AWS_REGION=awsfake.REGION,
               AWS_EC2_METADATA_DISABLED="true", SECRET_KEY_BASE=ak.secret_key_base())
    env[missing] = None
    r = awskit.run_serve(env)
    assert r.returncode == 2, awskit.output_of(r)
    assert any(l.startswith(line) for l in awskit.config_lines(r)), awskit.output_of(r)


def test_unknown_provider_names_ses():
    r = awskit.run_serve({"EMAIL_PROVIDER": "sendgrid", "SECRET_KEY_BASE": ak.secret_key_base()})
    assert r.returncode == 2, awskit.output_of(r)
    assert "config: EMAIL_PROVIDER must be log, smtp or ses" in awskit.output_of(r)
