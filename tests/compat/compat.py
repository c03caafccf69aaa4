"""Real, unmodified Python azure-identity (Debian's python3-azure) against running ficbroker instances.

    /usr/bin/python3 compat.py PLAN.json    prints one JSON row per check on stdout

Run with Debian's interpreter: python3-azure lives in /usr/lib/python3/dist-packages, which a
pyenv or venv python3 earlier on PATH does not see.

azure-identity of this generation reads IDENTITY_ENDPOINT / MSI_ENDPOINT when a credential is
built and AZURE_POD_IDENTITY_AUTHORITY_HOST when a request is made, and keeps its token cache
per credential. So one process can walk through the set-ups one after the other, with a fresh
credential per check, as long as the environment is final before each credential is built.
"""

import base64
import json
import logging
import os
import re
import signal
import sys
import time

SCRUB = re.compile(r"^(AZURE_|IDENTITY_|IMDS_|MSI_|MSAL_)|^(https?|all|no)_proxy$", re.IGNORECASE)
CHECK_TIMEOUT_S = 20
MIN_VALIDITY_S = 300  # MSAL treats a token with less left as expired
# ficbroker derives expires_on from the moment it received Entra's answer + expires_in, so it can
# name a second or so after the JWT's exp; anything further off (hours, or "now") is a failure.
EXP_SKEW_S = 5

# Before azure.identity is imported: nothing from the caller's environment may pre-empt managed
# identity (AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_FEDERATED_TOKEN_FILE do) or proxy loopback.
for _key in list(os.environ):
    if SCRUB.search(_key):
        del os.environ[_key]

import azure.core  # noqa: E402
import azure.identity  # noqa: E402
import msal  # noqa: E402
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # noqa: E402

# azure-identity logs each failed get_token at WARNING; the row already carries the error.
logging.getLogger("azure").addHandler(logging.NullHandler())

CLIENT = "Python %s azure-identity %s (msal %s, azure-core %s)" % (
    "%d.%d.%d" % sys.version_info[:3],
    azure.identity.__version__,
    msal.__version__,
    azure.core.__version__,
)

ROUTES = {
    "app_service": "App Service 2019-08-01 (IDENTITY_ENDPOINT + IDENTITY_HEADER)",
    "imds": "IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST)",
    "azure_ml": "App Service 2017-09-01 / Azure ML (MSI_ENDPOINT + MSI_SECRET)",
    "cloud_shell": "Cloud Shell form POST (MSI_ENDPOINT)",
    "dac_imds": "DefaultAzureCredential → IMDS env",
}
SLASH_SCOPE = "https://database.windows.net//.default"


def short(value):
    value = str(value)
    return value[:8] + "…" + value[-4:] if len(value) > 12 else value


def decode_claims(jwt):
    parts = str(jwt).split(".")
    if len(parts) != 3:
        raise ValueError("the access token is not a JWT")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def resource_of(scope):
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


def verify(world, expect, scope, access_token, expires_on):
    problems = []
    claims = decode_claims(access_token)
    home = expect["kind"] == "mi"
    tenant = world["home_tenant"] if home else expect["tenant"]
    appid = world["uami_client_id"] if home else world["app_client_id"]
    aud = resource_of(scope)
    if claims.get("tid") != tenant:
        problems.append("tid=%s, want %s" % (claims.get("tid"), tenant))
    if claims.get("iss") != "https://sts.windows.net/%s/" % tenant:
        problems.append("iss=%s" % claims.get("iss"))
    if claims.get("appid") != appid:
        problems.append("appid=%s, want %s" % (claims.get("appid"), appid))
    if claims.get("aud") != aud:
        problems.append("aud=%s, want %s" % (claims.get("aud"), aud))
    now = time.time()
    exp = int(claims.get("exp", 0))
    if not isinstance(expires_on, int):
        problems.append("client expiry %r is not an integer" % (expires_on,))
    else:
        if expires_on > exp + EXP_SKEW_S:
            problems.append("client expiry %d is %d s after the token's exp %d" % (expires_on, expires_on - exp, exp))
        if expires_on < now + MIN_VALIDITY_S:
            problems.append("client expiry %d s away (< %d s)" % (expires_on - now, MIN_VALIDITY_S))
    summary = "tid=%s appid=%s aud=%s expires_on=exp%+ds (%d min)" % (
        short(claims.get("tid")),
        short(claims.get("appid")),
        claims.get("aud"),
        (expires_on - exp) if isinstance(expires_on, int) else 0,
        round((exp - now) / 60),
    )
    return problems, summary


def error_text(exc):
    message = str(getattr(exc, "message", None) or exc).split("\n")[0]
    response = getattr(exc, "response", None)
    cause = exc.__cause__
    if response is None and cause is not None:
        response = getattr(cause, "response", None)
    if response is not None:
        try:
            body = json.loads(response.text())
            message = "HTTP %s from ficbroker: %s" % (response.status_code, body.get("error_description"))
        except Exception:  # pylint: disable=broad-except
            pass
    return ("%s: %s" % (type(exc).__name__, message))[:400]


def route_env(route, broker):
    if route == "app_service":
        return {"IDENTITY_ENDPOINT": broker["url"] + "/msi/token", "IDENTITY_HEADER": broker["identity_header"]}
    if route in ("imds", "dac_imds"):
        return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": broker["url"]}
    if route == "azure_ml":
        return {"MSI_ENDPOINT": broker["url"] + "/msi/token", "MSI_SECRET": broker["identity_header"]}
    if route == "cloud_shell":
        return {"MSI_ENDPOINT": broker["url"] + "/metadata/identity/oauth2/token"}
    raise ValueError(route)


def jobs(world):
    target = {"kind": "target", "tenant": world["default_tenant"]}
    mi = {"kind": "mi"}
    rid_tail = "…/" + world["uami_resource_id"].rsplit("/", 1)[-1]

    def check(selection, kwargs, expect, scope):
        return {"selection": selection, "kwargs": kwargs, "expect": expect, "scope": scope}

    def system(scope):
        return check("system (no id)", {}, target, scope)

    def by_app(scope):
        return check("client_id = app %s" % short(world["app_client_id"]),
                     {"client_id": world["app_client_id"]}, target, scope)

    def by_uami(scope):
        return check("client_id = UAMI %s" % short(world["uami_client_id"]),
                     {"client_id": world["uami_client_id"]}, mi, scope)

    def by_config(key, value, label, scope):
        return check('identity_config {"%s": %s}' % (key, label), {"identity_config": {key: value}}, mi, scope)

    def full(route):
        oid = world["uami_object_id"]
        rid = world["uami_resource_id"]
        checks = [system("https://vault.azure.net/.default"), system(SLASH_SCOPE),
                  by_app("https://graph.microsoft.com/.default"), by_app(SLASH_SCOPE),
                  by_uami("https://storage.azure.com/.default"), by_uami(SLASH_SCOPE)]
        id_params = [("object_id", oid, "UAMI " + short(oid))]
        if route == "app_service":
            id_params += [("principal_id", oid, "UAMI " + short(oid)), ("mi_res_id", rid, "UAMI " + rid_tail)]
        else:
            id_params += [("msi_res_id", rid, "UAMI " + rid_tail), ("mi_res_id", rid, "UAMI " + rid_tail)]
        for key, value, label in id_params:
            checks.append(by_config(key, value, label, "https://storage.azure.com/.default"))
            checks.append(by_config(key, value, label, SLASH_SCOPE))
        return checks

    return [
        ("app_service", "imds", full("app_service")),
        ("imds", "imds", full("imds")),
        ("azure_ml", "imds", [system("https://vault.azure.net/.default"), system(SLASH_SCOPE),
                              by_app("https://graph.microsoft.com/.default"),
                              by_uami("https://storage.azure.com/.default")]),
        ("cloud_shell", "imds", [system("https://vault.azure.net/.default"), system(SLASH_SCOPE)]),
        ("dac_imds", "imds", [system("https://cognitiveservices.azure.com/.default")]),
        ("imds", "app_service", [system("https://vault.azure.net/.default"),
                                 by_uami("https://storage.azure.com/.default")]),
        ("app_service", "workload_identity", [system("https://vault.azure.net/.default"), system(SLASH_SCOPE)]),
        ("imds", "file", [system("https://vault.azure.net/.default"), system(SLASH_SCOPE)]),
    ]


class CheckTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CheckTimeout("no answer within %d s" % CHECK_TIMEOUT_S)


def set_environment(values):
    for key in list(os.environ):
        if SCRUB.search(key):
            del os.environ[key]
    os.environ.update(values)


def main(plan_path):
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    world = plan["world"]
    signal.signal(signal.SIGALRM, _alarm)
    for route, source, checks in jobs(world):
        set_environment(route_env(route, plan["brokers"][source]))
        for c in checks:
            row = {
                "client": CLIENT,
                "route": ROUTES[route],
                "selection": c["selection"],
                "scope": c["scope"],
                "source": source,
                "expect": "home MI token" if c["expect"]["kind"] == "mi"
                else "tenant %s app token" % short(c["expect"]["tenant"]),
            }
            signal.alarm(CHECK_TIMEOUT_S)
            try:
                if route.startswith("dac_"):
                    credential = DefaultAzureCredential()
                else:
                    credential = ManagedIdentityCredential(**c["kwargs"])
                token = credential.get_token(c["scope"])
                problems, summary = verify(world, c["expect"], c["scope"], token.token, token.expires_on)
                row["result"] = "FAIL" if problems else "PASS"
                row["detail"] = "; ".join(problems) if problems else summary
            except Exception as exc:  # pylint: disable=broad-except
                row["result"] = "FAIL"
                row["detail"] = error_text(exc)
            finally:
                signal.alarm(0)
            print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: /usr/bin/python3 compat.py PLAN.json\n")
        sys.exit(2)
    main(sys.argv[1])
