"""Where kiln's AWS credentials come from, as the SDKs do it, tested through
a SECRET_KEY_BASE_SECRET_ARN read at start (the Secrets Manager fake
records which access key signed each call):

  1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN]
  2. the container endpoint: AWS_CONTAINER_CREDENTIALS_FULL_URI with
     AWS_CONTAINER_AUTHORIZATION_TOKEN or _TOKEN_FILE (RELATIVE_URI on
     169.254.170.2 cannot be served here)
  3. IMDSv2 at AWS_EC2_METADATA_SERVICE_ENDPOINT, unless
     AWS_EC2_METADATA_DISABLED=true

and the endpoint overrides (AWS_ENDPOINT_URL_SECRETS_MANAGER before
AWS_ENDPOINT_URL).  No service is needed: these run in embedded mode too
(see awskit.py).
"""

import os

import pytest

import authkit as ak
import awsfake
import awskit
import kilnhttp
from awskit import aws_env, ecs_env, service_free, store, sm, ecs, ecs_token, imds  # noqa: F401

pytestmark = service_free


def start_with_key_secret(kiln, sm, **env):
    key = ak.secret_key_base()
    arn = sm.create_secret("kiln/key", key)
    srv = ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn, **env)
    return srv, key, arn


def signers(sm):
    return {c.access_key for c in sm.calls}


@pytest.mark.parametrize("how", ["token", "token-file"])
def test_container_credentials(kiln, store, sm, ecs, ecs_token, tmp_path, how):
    if how == "token":
        cenv = ecs_env(ecs, token=ecs_token)
    else:
        path = tmp_path / "token"
        path.write_text(ecs_token)
        cenv = ecs_env(ecs, token_file=path)
    srv, key, arn = start_with_key_secret(kiln, sm, **aws_env(sm), **cenv)
    ak.assert_me(ak.me(srv, ak.session_for(srv)))
    assert sm.failures == [] and sm.gets(arn)
    assert signers(sm) == {ecs.current.access_key}
    assert ecs.fetches >= 1 and ecs.refused == 0
    awskit.assert_no_secrets(srv, key, ecs_token, *ecs.secrets())


@pytest.mark.parametrize("how", ["wrong-token", "wrong-token-file", "no-token", "endpoint-down"])
def test_container_endpoint_refusing_stops_the_start_cleanly(store, sm, ecs, ecs_token, tmp_path,
                                                            how):
    wrong = "ecs-wrong-" + os.urandom(16).hex()
    if how == "wrong-token":
        cenv = ecs_env(ecs, token=wrong)
    elif how == "wrong-token-file":
        path = tmp_path / "token"
        path.write_text(wrong)
        cenv = ecs_env(ecs, token_file=path)
    elif how == "no-token":
        cenv = ecs_env(ecs)
    else:
        cenv = ecs_env(ecs, token=ecs_token)
        cenv["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = \
            f"http://127.0.0.1:{kilnhttp.free_port()}/v2/credentials/x"
    arn = sm.create_secret("kiln/key", ak.secret_key_base())
    r = awskit.run_serve(dict(aws_env(sm), SECRET_KEY_BASE_SECRET_ARN=arn, **cenv))
    out = awskit.output_of(r)
    assert r.returncode == 1, (r.returncode, out[-2000:])
    assert "SECRET_KEY_BASE" in out, out[-2000:]
    assert "credential" in out.lower() or "container" in out.lower(), \
        f"the output does not say the credentials failed:\n{out[-2000:]}"
    awskit.assert_no_secrets(out, wrong, ecs_token, *ecs.secrets(), *sm.all_values())
    if how != "endpoint-down":
        assert ecs.refused >= 1 and ecs.fetches == 0
    assert sm.calls == [], "Secrets Manager was called without credentials"


def test_imds_v2_when_nothing_else_is_set(kiln, store, sm, imds):
    srv, key, arn = start_with_key_secret(
        kiln, sm, **aws_env(sm, AWS_EC2_METADATA_DISABLED=None,
                            AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.base_url))
    ak.assert_me(ak.me(srv, ak.session_for(srv)))
    assert sm.failures == [] and sm.gets(arn)
    assert signers(sm) == {imds.current.access_key}
    assert imds.token_puts >= 1 and imds.fetches >= 1
    assert imds.unauthorized == 0, "kiln made an IMDSv1 (token-less) request"
    awskit.assert_no_secrets(srv, key, *imds.secrets())


def test_imds_disabled_means_no_credentials(store, sm, imds):
    arn = sm.create_secret("kiln/key", ak.secret_key_base())
    r = awskit.run_serve(dict(aws_env(sm, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.base_url),
                              SECRET_KEY_BASE_SECRET_ARN=arn))
    assert r.returncode == 1, (r.returncode, awskit.output_of(r)[-2000:])
    assert imds.calls == [] and sm.calls == []


def test_static_keys_win_over_container_and_imds(kiln, store, sm, ecs, ecs_token, imds):
    creds = store.temporary()      # with a session token: AWS_SESSION_TOKEN is used
    srv, key, arn = start_with_key_secret(
        kiln, sm, **aws_env(sm, creds, AWS_EC2_METADATA_DISABLED=None,
                            AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.base_url),
        **ecs_env(ecs, token=ecs_token))
    assert sm.failures == [] and sm.gets(arn)
    assert signers(sm) == {creds.access_key}
    assert ecs.calls == [] and imds.calls == []
    awskit.assert_no_secrets(srv, key, *creds.secrets(), ecs_token)


def test_container_wins_over_imds(kiln, store, sm, ecs, ecs_token, imds):
    srv, key, arn = start_with_key_secret(
        kiln, sm, **aws_env(sm, AWS_EC2_METADATA_DISABLED=None,
                            AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.base_url),
        **ecs_env(ecs, token=ecs_token))
    assert sm.failures == [] and signers(sm) == {ecs.current.access_key}
    assert imds.calls == []


def test_endpoint_override_order(kiln, store):
    creds = store.static()
    with awsfake.SecretsManagerFake(store) as specific, awsfake.SecretsManagerFake(store) as generic:
        arn = specific.create_secret("kiln/key", ak.secret_key_base())
        generic.create_secret("kiln/key", ak.secret_key_base())
        ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn,
                      **aws_env(specific, creds, AWS_ENDPOINT_URL=generic.base_url))
        assert specific.gets(arn) and generic.calls == []
        # AWS_ENDPOINT_URL alone
        arn2 = generic.create_secret("kiln/key2", ak.secret_key_base())
        ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn2,
                      **aws_env(None, creds, AWS_ENDPOINT_URL=generic.base_url))
        assert generic.gets(arn2)
        assert specific.failures == [] and generic.failures == []


@pytest.mark.parametrize("lifetime,refetch", [(3600, False), (120, True)])
def test_container_credentials_are_cached_until_near_expiry(kiln, store, sm, ecs_token, lifetime,
                                                           refetch):
    """Three reads (start and two reloads): one credentials fetch when they
    last an hour; one per read when they expire within the refresh margin
    (KILN_AWS_REFRESH_S, 300 s, aws/aws.h)."""
    with awsfake.EcsCredentialsFake(store, auth_token=ecs_token, lifetime=lifetime) as ecs:
        key = ak.secret_key_base()
        arn = sm.create_secret("kiln/key", key)
        srv = ak.start_kiln(kiln, SECRET_KEY_BASE=None, SECRET_KEY_BASE_SECRET_ARN=arn,
                            ENABLE_SECRET_RELOAD="true", SECRET_RELOAD_INTERVAL_SECONDS="0",
                            **aws_env(sm), **ecs_env(ecs, token=ecs_token))
        for _ in range(2):
            sm.put_secret(arn, ak.secret_key_base())
            awskit.reload_and_wait(srv)
        assert len(sm.gets(arn)) == 3 and sm.failures == []
        if refetch:
            assert ecs.fetches >= 3
        else:
            assert ecs.fetches == 1
