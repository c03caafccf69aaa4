#!/usr/bin/python3
"""Static checks of ficbroker's deployment files (run by tests/deploy/run.sh).

Needs Debian's python3-yaml, so run it with /usr/bin/python3 (not a pyenv python).

  check_deploy.py [--root DIR]             run every check; one PASS/FAIL line per check
  check_deploy.py --snippet FILE|-         validate a config snippet printed by deploy/azure/*.sh
  check_deploy.py --self-test              break each checked field once (mutations) and make sure
                                           the checks notice
  check_deploy.py --rootfs-smoke BINARY    run the Dockerfile's runtime-rootfs RUN step against BINARY
                                           and chroot into the result (root only)
  check_deploy.py --context-build          the Dockerfile's build stage without Docker: COPY what
                                           .dockerignore lets through, build, assemble, chroot (slow)

The last output line is '@@counts <passed> <failed>' for run.sh to add up.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover - reported as a failed check by main()
    yaml = None

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent

BROKER_UID = 10001
BROKER_BIN = "/usr/local/bin/ficbroker"
CONFIG_PATH = "/etc/ficbroker/config.jsonc"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DOMAIN_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")
# Environment variables that send the Azure SDKs around ficbroker when set in an app container.
FORBIDDEN_APP_ENV = {
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
}


class CheckError(Exception):
    """A failed assertion; the message says what and where."""


def need(cond: bool, message: str) -> None:
    if not cond:
        raise CheckError(message)


# --------------------------------------------------------------------------------------------
# Result bookkeeping
# --------------------------------------------------------------------------------------------
class Results:
    def __init__(self, quiet: bool = False) -> None:
        self.passed: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.quiet = quiet

    def run(self, name: str, fn, *args) -> bool:
        try:
            detail = fn(*args)
        except CheckError as e:
            self.failed.append((name, str(e)))
            if not self.quiet:
                print(f"FAIL {name}: {e}")
            return False
        except Exception as e:  # a crash in a check is a failure of that check
            msg = f"{type(e).__name__}: {e}"
            self.failed.append((name, msg))
            if not self.quiet:
                print(f"FAIL {name}: {msg}")
                traceback.print_exc(limit=3, file=sys.stdout)
            return False
        self.passed.append(name)
        if not self.quiet:
            print(f"PASS {name}" + (f" ({detail})" if isinstance(detail, str) and detail else ""))
        return True


# --------------------------------------------------------------------------------------------
# JSONC and the ficbroker config schema (mirrors src/config/config.cpp)
# --------------------------------------------------------------------------------------------
def strip_jsonc(text: str) -> str:
    """Remove // and /* */ comments outside strings (keeps line structure for error positions)."""
    out = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise CheckError("unterminated /* comment")
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_jsonc(text: str, where: str):
    try:
        return json.loads(strip_jsonc(text))
    except json.JSONDecodeError as e:
        raise CheckError(f"{where}: not valid JSON with comments: {e}") from None


TOP_KEYS = {"listen", "metrics_listen", "allow_remote", "allowed_hosts", "transparent", "authority_host", "ca_file",
            "identity_header", "identity_header_file", "log_level", "cache", "server", "unix_socket",
            "sources", "targets"}
CACHE_KEYS = {"min_validity_seconds", "idle_ttl_seconds", "max_entries", "max_entries_per_target",
              "max_in_flight", "max_in_flight_per_host", "max_queued", "max_queue_wait_ms"}
SERVER_KEYS = {"max_connections", "header_timeout_ms", "idle_timeout_ms", "write_timeout_ms"}
SOURCE_KEYS = {
    "imds": {"type", "endpoint", "client_id", "object_id", "resource_id"},
    "app_service": {"type", "endpoint", "header", "client_id", "object_id", "resource_id"},
    "workload_identity": {"type", "path"},
    "file": {"type", "path"},
}
TARGET_KEYS = {"tenant_id", "client_id", "source", "default", "cloud", "authority_host",
               "exchange_audience", "prewarm", "allowed_resources"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def parse_listen(listen: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})", listen)
    need(m is not None, f"listen '{listen}' is not host:port")
    port = int(m.group(2))
    need(1 <= port <= 65535, f"listen port {port} out of range")
    return m.group(1), port


def validate_config(cfg, where: str, partial: bool = False) -> dict:
    """Checks a parsed config (or, with partial, a sources/targets snippet). Returns facts."""
    need(isinstance(cfg, dict), f"{where}: must be a JSON object")
    unknown = set(cfg) - TOP_KEYS
    need(not unknown, f"{where}: unknown top-level keys {sorted(unknown)} (ficbroker rejects them)")
    facts = {"port": 8181, "host": "127.0.0.1"}
    if "listen" in cfg:
        need(isinstance(cfg["listen"], str), f"{where}: listen must be a string")
        host, port = parse_listen(cfg["listen"])
        facts.update(host=host, port=port)
        if not cfg.get("allow_remote", False):
            need(host in LOOPBACK_HOSTS or host.startswith("127."),
                 f"{where}: listen host {host} is not loopback and allow_remote is not true")
    for key in ("allow_remote", "transparent"):
        if key in cfg:
            need(isinstance(cfg[key], bool), f"{where}: {key} must be true or false")
    if "log_level" in cfg:
        need(cfg["log_level"] in {"debug", "info", "warn", "error"}, f"{where}: bad log_level")
    need(not ("identity_header" in cfg and "identity_header_file" in cfg),
         f"{where}: give identity_header or identity_header_file, not both")
    if "identity_header_file" in cfg:
        p = cfg["identity_header_file"]
        need(isinstance(p, str) and p.startswith("/"), f"{where}: identity_header_file must be an absolute path")
    if "cache" in cfg:
        c = cfg["cache"]
        need(isinstance(c, dict), f"{where}: cache must be an object")
        unknown = set(c) - CACHE_KEYS
        need(not unknown, f"{where}: unknown cache keys {sorted(unknown)}")
        for k, v in c.items():
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{where}: cache.{k} must be a non-negative integer")
    if "server" in cfg:
        c = cfg["server"]
        need(isinstance(c, dict), f"{where}: server must be an object")
        unknown = set(c) - SERVER_KEYS
        need(not unknown, f"{where}: unknown server keys {sorted(unknown)}")
    need(partial or "sources" in cfg, f"{where}: sources missing")
    need(partial or "targets" in cfg, f"{where}: targets missing")
    sources = cfg.get("sources", {})
    need(isinstance(sources, dict), f"{where}: sources must be an object")
    for name, src in sources.items():
        need(isinstance(src, dict), f"{where}: sources.{name} must be an object")
        t = src.get("type")
        need(t in SOURCE_KEYS, f"{where}: sources.{name}.type '{t}' is not one of {sorted(SOURCE_KEYS)}")
        unknown = set(src) - SOURCE_KEYS[t]
        need(not unknown, f"{where}: sources.{name}: unknown keys {sorted(unknown)} for type {t}")
        for k in ("client_id", "object_id"):
            if k in src:
                need(bool(GUID_RE.match(str(src[k]))), f"{where}: sources.{name}.{k} is not a GUID")
        if "endpoint" in src:
            u = urlsplit(src["endpoint"])
            need(u.scheme in ("http", "https") and u.hostname, f"{where}: sources.{name}.endpoint is not a URL")
        if t in ("workload_identity", "file"):
            need(str(src.get("path", "/")).startswith("/"), f"{where}: sources.{name}.path must be absolute")
        if t == "file":
            need("path" in src, f"{where}: sources.{name}.path missing")
    targets = cfg.get("targets", [])
    need(isinstance(targets, list), f"{where}: targets must be an array")
    need(partial or len(targets) > 0, f"{where}: targets must not be empty")
    defaults = 0
    seen = set()
    for i, t in enumerate(targets):
        p = f"{where}: targets[{i}]"
        need(isinstance(t, dict), f"{p} must be an object")
        unknown = set(t) - TARGET_KEYS
        need(not unknown, f"{p}: unknown keys {sorted(unknown)}")
        tid = str(t.get("tenant_id", ""))
        need(bool(GUID_RE.match(tid) or DOMAIN_RE.match(tid)), f"{p}.tenant_id '{tid}' is not a GUID or domain")
        need(bool(GUID_RE.match(str(t.get("client_id", "")))), f"{p}.client_id is not a GUID")
        need("source" in t, f"{p}.source missing")
        if sources or not partial:
            need(t["source"] in sources, f"{p}.source '{t['source']}' is not a configured source")
        if t.get("default") is True:
            defaults += 1
        if "cloud" in t:
            need(t["cloud"] in ("public", "usgov", "china"), f"{p}.cloud must be public, usgov or china")
        for k in ("prewarm", "allowed_resources"):
            if k in t:
                need(isinstance(t[k], list) and all(isinstance(r, str) and r for r in t[k]),
                     f"{p}.{k} must be a list of resource strings")
        key = (tid.lower(), str(t.get("client_id", "")).lower())
        need(key not in seen, f"{p}: tenant/app pair appears twice")
        seen.add(key)
    need(defaults <= 1, f"{where}: more than one target has default: true")
    facts["transparent"] = bool(cfg.get("transparent", False))
    facts["identity_header_file"] = cfg.get("identity_header_file")
    facts["source_types"] = {s.get("type") for s in sources.values()}
    facts["prewarm"] = [r for t in targets for r in t.get("prewarm", [])]
    facts["client_ids"] = {str(t.get("client_id", "")).lower() for t in targets}
    return facts


# --------------------------------------------------------------------------------------------
# A small Helm template renderer: exactly {{ .Values.x.y }}, {{ .Release.Name }},
# {{- if .Values.x }} … {{- end }} and {{ toYaml .Values.x | nindent N }}, with Go's trim markers.
# Anything else is an error, so a template that needs real Helm features fails the check.
# --------------------------------------------------------------------------------------------
ACTION_RE = re.compile(r"\{\{(-(?=\s))?(.*?)((?<=\s)-)?\}\}", re.S)
PATH_RE = re.compile(r"^\.(Values|Release)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")
TOYAML_RE = re.compile(r"^toYaml\s+(\S+)\s*\|\s*nindent\s+(\d+)$")


class _LiteralDumper(yaml.SafeDumper if yaml else object):
    pass


if yaml:
    def _str_representer(dumper, data):
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _LiteralDumper.add_representer(str, _str_representer)


def helm_to_yaml(value) -> str:
    # Helm's toYaml: keys sorted, block style, no trailing newline.
    return yaml.dump(value, Dumper=_LiteralDumper, default_flow_style=False, sort_keys=True,
                     allow_unicode=True, width=4096).rstrip("\n")


def go_truthy(v) -> bool:
    return not (v is None or v is False or v == 0 or v == "" or v == [] or v == {})


def go_format(v, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)
    raise CheckError(f"{where}: {{{{ }}}} of a {type(v).__name__}; use toYaml")


def render_helm(template: str, values: dict, release_name: str, where: str) -> str:
    ctx = {"Values": values, "Release": {"Name": release_name}}

    def lookup(expr: str):
        m = PATH_RE.match(expr)
        if not m:
            raise CheckError(f"{where}: unsupported expression '{expr}'")
        node = ctx[m.group(1)]
        walked = "." + m.group(1)
        for part in m.group(2).strip(".").split("."):
            if not isinstance(node, dict) or part not in node:
                raise CheckError(f"{where}: {walked}.{part} is not defined in values")
            node = node[part]
            walked += "." + part
        return node

    # Tokenise, applying the trim markers: '{{- ' eats white space before, ' -}}' after.
    items: list[list] = []
    pos = 0
    for m in ACTION_RE.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        items.append(["text", text])
        items.append(["action", m.group(2).strip(), bool(m.group(3))])
        pos = m.end()
    items.append(["text", template[pos:]])
    for i, it in enumerate(items):
        if it[0] == "action" and it[2]:
            items[i + 1][1] = items[i + 1][1].lstrip(" \t\r\n")
    if "{{" in "".join(t[1] for t in items if t[0] == "text"):
        raise CheckError(f"{where}: malformed template action")

    out: list[str] = []
    stack: list[bool] = []  # enclosing if conditions

    def active() -> bool:
        return all(stack)

    for it in items:
        if it[0] == "text":
            if active():
                out.append(it[1])
            continue
        action = it[1]
        if action.startswith("if "):
            stack.append(go_truthy(lookup(action[3:].strip())) if active() else False)
        elif action == "end":
            if not stack:
                raise CheckError(f"{where}: 'end' without 'if'")
            stack.pop()
        elif action.startswith("toYaml"):
            m = TOYAML_RE.match(action)
            if not m:
                raise CheckError(f"{where}: unsupported pipeline '{action}' (only toYaml X | nindent N)")
            if active():
                pad = " " * int(m.group(2))
                body = helm_to_yaml(lookup(m.group(1)))
                out.append("\n" + "\n".join(pad + line for line in body.split("\n")))
        elif PATH_RE.match(action):
            if active():
                out.append(go_format(lookup(action), where))
        else:
            raise CheckError(f"{where}: unsupported template action '{{{{ {action} }}}}'")
    if stack:
        raise CheckError(f"{where}: 'if' without 'end'")
    return "".join(out)


def deep_merge(base: dict, override: dict) -> dict:
    result = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(result.get(k), dict):
            result[k] = deep_merge(result[k], v)
        else:
            result[k] = copy.deepcopy(v)
    return result


# --------------------------------------------------------------------------------------------
# Kubernetes manifest assertions
# --------------------------------------------------------------------------------------------
def load_yaml_docs(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def env_map(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", []) or []}


def probe_target(probe: dict, where: str) -> tuple[str, int, str]:
    """(host, port, path) a probe checks. Exec probes must be 'ficbroker probe URL'."""
    need(isinstance(probe, dict), f"{where}: missing")
    if "exec" in probe:
        cmd = probe["exec"].get("command", [])
        need(len(cmd) == 3 and cmd[0] == BROKER_BIN and cmd[1] == "probe",
             f"{where}: exec probe must be [{BROKER_BIN}, probe, URL], got {cmd}")
        u = urlsplit(cmd[2])
        need(u.scheme == "http" and u.hostname and u.port, f"{where}: probe URL '{cmd[2]}' needs http://host:port/path")
        return u.hostname, u.port, u.path
    if "httpGet" in probe:
        g = probe["httpGet"]
        return g.get("host", "<pod IP>"), g.get("port"), g.get("path")
    raise CheckError(f"{where}: must be an exec or httpGet probe")


def check_security_context(c: dict, pod_sc: dict, where: str, *, allow_root=False, allowed_add=()):
    sc = c.get("securityContext") or {}
    need(sc.get("privileged") is not True, f"{where}: privileged")
    need(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
    need(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
    caps = sc.get("capabilities") or {}
    need("ALL" in (caps.get("drop") or []), f"{where}: capabilities.drop must contain ALL")
    added = list(caps.get("add") or [])
    need(sorted(added) == sorted(allowed_add),
         f"{where}: capabilities.add is {added}, expected {list(allowed_add)}")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    need(seccomp == "RuntimeDefault", f"{where}: seccompProfile must be RuntimeDefault")
    if not allow_root:
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        need(non_root is True, f"{where}: runAsNonRoot must be true")
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        need(isinstance(uid, int) and uid > 0, f"{where}: runAsUser must be a non-zero uid")


def check_resources(c: dict, where: str):
    r = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            need(str((r.get(kind) or {}).get(res, "")).strip() != "",
                 f"{where}: resources.{kind}.{res} missing")


def find_kind(docs: list, kind: str, name: str | None = None) -> list:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def check_deployment(dep: dict, docs: list, where: str, config_texts: dict | None = None) -> str:
    """All the assertions that matter for one Deployment with the ficbroker sidecar.

    docs: the other objects available (ConfigMaps, Secrets, ServiceAccounts) to cross-check;
    config_texts: ConfigMap name -> config text, when ConfigMaps are not in docs.
    """
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    meta = pod.get("metadata") or {}
    pod_sc = spec.get("securityContext") or {}
    need(pod_sc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot must be true")
    need((pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
         f"{where}: pod seccompProfile must be RuntimeDefault")
    need(spec.get("hostNetwork") is not True, f"{where}: hostNetwork must not be used")
    need(spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken must be false")
    sel = dep["spec"]["selector"]["matchLabels"]
    need(all((meta.get("labels") or {}).get(k) == v for k, v in sel.items()),
         f"{where}: selector does not match the pod labels")

    inits = spec.get("initContainers") or []
    names = [c["name"] for c in inits]
    need("ficbroker" in names, f"{where}: no initContainer named ficbroker")
    broker = inits[names.index("ficbroker")]
    bw = f"{where}: initContainers[ficbroker]"

    # Native sidecar.
    need(broker.get("restartPolicy") == "Always", f"{bw}: restartPolicy must be Always (native sidecar)")
    image = broker.get("image", "")
    need(re.fullmatch(r"(.+/)?ficbroker:[A-Za-z0-9_.-]+", image) is not None and not image.endswith(":latest"),
         f"{bw}: image '{image}' must be ficbroker:<pinned tag>")
    need(broker.get("args") == ["--config", CONFIG_PATH] or broker.get("command") == [BROKER_BIN, "--config", CONFIG_PATH],
         f"{bw}: args must be ['--config', '{CONFIG_PATH}']")

    # Config from the ConfigMap mounted at /etc/ficbroker.
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    mounts = {m["mountPath"]: m for m in broker.get("volumeMounts") or []}
    need("/etc/ficbroker" in mounts, f"{bw}: nothing mounted at /etc/ficbroker")
    need(mounts["/etc/ficbroker"].get("readOnly") is True, f"{bw}: /etc/ficbroker mount must be readOnly")
    cfg_vol = vols.get(mounts["/etc/ficbroker"]["name"], {})
    need("configMap" in cfg_vol, f"{bw}: /etc/ficbroker must come from a ConfigMap")
    cm_name = cfg_vol["configMap"]["name"]
    cms = find_kind(docs, "ConfigMap", cm_name)
    if cms:
        text = (cms[0].get("data") or {}).get("config.jsonc")
    else:
        text = (config_texts or {}).get(cm_name)
    need(text is not None, f"{where}: ConfigMap {cm_name} with key config.jsonc not found")
    facts = validate_config(parse_jsonc(text, f"ConfigMap {cm_name}"), f"ConfigMap {cm_name}")
    port = facts["port"]

    ports = [p.get("containerPort") for p in broker.get("ports") or []]
    need(port in ports, f"{bw}: containerPort {ports} does not include the config's listen port {port}")

    # Probes: /readyz gates start-up, /healthz is liveness; on the config's port.
    loopback = facts["host"] in LOOPBACK_HOSTS or facts["host"].startswith("127.")
    for field, path in (("startupProbe", "/readyz"), ("livenessProbe", "/healthz")):
        host, pport, ppath = probe_target(broker.get(field), f"{bw}.{field}")
        need(ppath == path, f"{bw}.{field}: path {ppath}, expected {path}")
        need(pport == port, f"{bw}.{field}: port {pport}, expected the listen port {port}")
        if host == "<pod IP>":
            need(not loopback, f"{bw}.{field}: an httpGet probe reaches the pod IP, but ficbroker listens on {facts['host']}")
    need("readinessProbe" not in broker or probe_target(broker["readinessProbe"], bw)[2] == "/readyz",
         f"{bw}: readinessProbe, if any, must use /readyz")

    check_resources(broker, bw)
    check_security_context(broker, pod_sc, bw)
    broker_sc = broker.get("securityContext") or {}
    broker_uid = broker_sc.get("runAsUser", pod_sc.get("runAsUser"))
    need(broker_uid == BROKER_UID, f"{bw}: runAsUser must be {BROKER_UID}, got {broker_uid}")

    # Identity header: Secret file for ficbroker, secretKeyRef env for the app.
    hdr = facts["identity_header_file"]
    need(hdr is not None, f"ConfigMap {cm_name}: identity_header_file must be set (the /msi/token secret)")
    hdr_dir, hdr_key = posixpath.split(hdr)
    need(hdr_dir in mounts, f"{bw}: identity_header_file {hdr} is not under a volume mount")
    need(mounts[hdr_dir].get("readOnly") is True, f"{bw}: {hdr_dir} mount must be readOnly")
    sec_vol = vols.get(mounts[hdr_dir]["name"], {})
    need("secret" in sec_vol, f"{bw}: {hdr_dir} must be a Secret volume")
    secret_name = sec_vol["secret"]["secretName"]
    mode = sec_vol["secret"].get("defaultMode", 0o644)
    need(mode & 0o007 == 0, f"{where}: Secret volume defaultMode {oct(mode)} is readable by others")
    # Secret files are owned by root with group fsGroup: ficbroker reads them through the group.
    broker_gid = broker_sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    need(mode & 0o040 and pod_sc.get("fsGroup") == broker_gid,
         f"{where}: ficbroker (gid {broker_gid}) cannot read the Secret: needs a group-readable defaultMode "
         f"(now {oct(mode)}) and pod fsGroup {broker_gid} (now {pod_sc.get('fsGroup')})")

    # Transparent mode init container, if any.
    transparent_inits = [c for c in inits if c["name"] != "ficbroker"]
    for c in transparent_inits:
        cw = f"{where}: initContainers[{c['name']}]"
        need(c.get("restartPolicy") is None, f"{cw}: must be an ordinary (run-to-completion) init container")
        need(names.index(c["name"]) < names.index("ficbroker"), f"{cw}: must run before the ficbroker sidecar")
        check_resources(c, cw)
        check_security_context(c, pod_sc, cw, allow_root=True, allowed_add=("NET_ADMIN",))
        env = env_map(c)
        need(env.get("FICBROKER_UID", {}).get("value") == str(broker_uid),
             f"{cw}: FICBROKER_UID must equal ficbroker's runAsUser {broker_uid}")
        need(env.get("FICBROKER_PORT", {}).get("value") == str(port),
             f"{cw}: FICBROKER_PORT must equal the listen port {port}")
        need(facts["transparent"], f"ConfigMap {cm_name}: transparent must be true with a redirect init container")
    if not transparent_inits:
        need(not facts["transparent"], f"ConfigMap {cm_name}: transparent is true but nothing redirects 169.254.169.254")

    # App containers.
    apps = spec.get("containers") or []
    need(apps, f"{where}: no app container")
    for c in apps:
        cw = f"{where}: containers[{c['name']}]"
        check_resources(c, cw)
        check_security_context(c, pod_sc, cw)
        uid = (c.get("securityContext") or {}).get("runAsUser", pod_sc.get("runAsUser"))
        need(uid != broker_uid, f"{cw}: must not run as ficbroker's uid {broker_uid}")
        env = env_map(c)
        need(env.get("IDENTITY_ENDPOINT", {}).get("value") == f"http://127.0.0.1:{port}/msi/token",
             f"{cw}: IDENTITY_ENDPOINT must be http://127.0.0.1:{port}/msi/token")
        ref = ((env.get("IDENTITY_HEADER") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        need("value" not in (env.get("IDENTITY_HEADER") or {}), f"{cw}: IDENTITY_HEADER must not be a literal value")
        need(ref.get("name") == secret_name and ref.get("key") == hdr_key,
             f"{cw}: IDENTITY_HEADER must come from secretKeyRef {secret_name}/{hdr_key}, got {ref or 'none'}")
        need(env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", {}).get("value") == f"http://127.0.0.1:{port}",
             f"{cw}: AZURE_POD_IDENTITY_AUTHORITY_HOST must be http://127.0.0.1:{port} (no path, no trailing slash)")
        bad = FORBIDDEN_APP_ENV & set(env)
        need(not bad, f"{cw}: {sorted(bad)} would make the SDKs bypass ficbroker")
        app_mounts = {m["name"] for m in c.get("volumeMounts") or []}
        need(mounts[hdr_dir]["name"] not in app_mounts, f"{cw}: must not mount ficbroker's Secret volume")

    # Workload identity wiring.
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get("azure.workload.identity/use") == "true" or "workload_identity" in facts["source_types"]:
        need(labels.get("azure.workload.identity/use") == "true",
             f"{where}: workload_identity source needs pod label azure.workload.identity/use=\"true\"")
        need("workload_identity" in facts["source_types"], f"ConfigMap {cm_name}: no workload_identity source")
        skipped = {s.strip() for s in annotations.get("azure.workload.identity/skip-containers", "").split(";") if s.strip()}
        missing = {c["name"] for c in apps} - skipped
        need(not missing, f"{where}: azure.workload.identity/skip-containers must list app containers {sorted(missing)}")
        need("ficbroker" not in skipped, f"{where}: the webhook must not skip ficbroker")
        sa = spec.get("serviceAccountName")
        need(sa, f"{where}: serviceAccountName missing")
        sas = find_kind(docs, "ServiceAccount", sa)
        need(sas, f"{where}: ServiceAccount {sa} not defined alongside")
        ann = sas[0]["metadata"].get("annotations") or {}
        need(str(ann.get("azure.workload.identity/client-id", "")).lower() in facts["client_ids"],
             f"ServiceAccount {sa}: client-id annotation must be a target's client_id")
    return f"port {port}, {len(inits)} init, {len(apps)} app container(s)"


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, line) with continuation lines joined and comments dropped."""
    result = []
    buf, start = "", 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation are ignored
        if not buf:
            start = lineno
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        parts = buf.strip().split(None, 1)
        result.append((parts[0].upper(), parts[1] if len(parts) > 1 else "", start))
        buf = ""
    need(buf == "", "Dockerfile ends inside a line continuation")
    return result


def parse_exec_form(args: str, where: str) -> list:
    try:
        v = json.loads(args)
    except json.JSONDecodeError:
        raise CheckError(f"{where}: must use the exec (JSON array) form, got {args!r}") from None
    need(isinstance(v, list) and all(isinstance(x, str) for x in v), f"{where}: must be a JSON array of strings")
    return v


def dockerignore_patterns(root: Path) -> list[tuple[bool, str]]:
    p = root / ".dockerignore"
    need(p.exists(), ".dockerignore missing")
    pats = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = posixpath.normpath(line[1:] if neg else line).lstrip("/")
        pats.append((neg, pat))
    return pats


def _pattern_matches(pat: str, path: str) -> bool:
    # Docker semantics, enough for our patterns: '*' within a segment, '**' across segments, and a
    # pattern matching a directory also matches everything under it.
    regex = ""
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pat.startswith("**", i):
            regex += ".*"
            i += 2
        elif pat[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pat[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pat[i])
            i += 1
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:k])) for k in range(1, len(parts) + 1))


def dockerignored(path: str, patterns) -> bool:
    excluded = False
    for neg, pat in patterns:
        if _pattern_matches(pat, path):
            excluded = not neg
    return excluded


def context_files(root: Path, src: str) -> list[str]:
    p = root / src
    if p.is_dir():
        return [str(f.relative_to(root)) for f in p.rglob("*") if f.is_file()]
    return [str(p.relative_to(root))]


def unconditional_subdirs(cmake_text: str) -> list[str]:
    """add_subdirectory() calls of the top-level CMakeLists.txt outside any if() block."""
    depth = 0
    dirs = []
    for line in cmake_text.splitlines():
        code = line.split("#", 1)[0].strip()
        if re.match(r"^if\s*\(", code, re.I):
            depth += 1
        elif re.match(r"^endif\s*\(", code, re.I):
            depth -= 1
        m = re.match(r"^add_subdirectory\s*\(\s*([^\s)]+)", code, re.I)
        if m and depth == 0:
            dirs.append(m.group(1))
        m = re.match(r"^include\s*\(\s*([^\s)]+/[^\s)]+)", code, re.I)
        if m and depth == 0:
            dirs.append(m.group(1).replace("${PROJECT_SOURCE_DIR}/", "").replace("${CMAKE_SOURCE_DIR}/", ""))
    return dirs


def check_dockerfile(root: Path) -> str:
    text = (root / "Dockerfile").read_text()
    ins = dockerfile_instructions(text)
    stages = []  # dicts: name, base, instructions
    for op, args, line in ins:
        if op == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            need(m is not None, f"Dockerfile:{line}: cannot parse FROM {args}")
            stages.append({"name": (m.group(2) or "").lower(), "base": m.group(1), "ins": [], "line": line})
        else:
            need(stages or op == "ARG", f"Dockerfile:{line}: {op} before the first FROM")
            if stages:
                stages[-1]["ins"].append((op, args, line))
    need(len(stages) >= 2, "Dockerfile must be multi-stage (builder + runtime)")
    names = [s["name"] for s in stages]
    need(all(names), "every Dockerfile stage must be named (FROM image AS name)")
    need(len(set(names)) == len(names), "Dockerfile stage names must be unique")
    build = stages[0]
    need(build["base"] == "debian:bookworm", f"first stage must be FROM debian:bookworm, is {build['base']}")
    final = stages[-1]
    need(final["base"] in ("scratch", "debian:bookworm-slim") or final["base"].startswith("gcr.io/distroless"),
         f"final stage FROM {final['base']}: expected scratch (or bookworm-slim)")

    # Builder: packages, cmake invocation, strip.
    run_text = " ".join(a for op, a, _ in build["ins"] if op == "RUN")
    for pkg in ("cmake", "ninja-build", "g++", "libboost1.81-dev", "libboost-json1.81-dev", "libssl-dev", "ca-certificates"):
        need(re.search(r"(^|\s)" + re.escape(pkg) + r"(\s|$)", run_text) is not None, f"builder does not apt-get install {pkg}")
    for frag in ("cmake -S . -B build", "-G Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DFICBROKER_BUILD_TESTS=OFF",
                 "cmake --build build --target ficbroker", "strip", "ldd", "/etc/ssl/certs/ca-certificates.crt"):
        need(frag in run_text, f"builder RUN steps lack '{frag}'")
    need(re.search(r"ficbroker:x:10001:10001:", run_text), "builder does not write an /etc/passwd line for uid 10001")
    need(re.search(r"ficbroker:x:10001:", run_text), "builder does not write an /etc/group line for gid 10001")

    # COPY sources: stages exist (and come earlier), files exist, not excluded by .dockerignore.
    patterns = dockerignore_patterns(root)
    copied = set()
    for si, st in enumerate(stages):
        for op, args, line in st["ins"]:
            if op not in ("COPY", "ADD"):
                continue
            need(op == "COPY", f"Dockerfile:{line}: use COPY, not ADD")
            words = args.split()
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            need(len(paths) >= 2, f"Dockerfile:{line}: COPY needs a source and a destination")
            from_flag = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
            if from_flag:
                need(from_flag[0].lower() in names[:si], f"Dockerfile:{line}: --from={from_flag[0]} is not an earlier stage")
                continue
            for src in paths[:-1]:
                norm = posixpath.normpath(src).lstrip("/")
                need(norm != "." or len(paths) == 2, f"Dockerfile:{line}: bad source {src}")
                need((root / norm).exists(), f"Dockerfile:{line}: COPY source '{src}' does not exist")
                files = context_files(root, norm)
                need(files, f"Dockerfile:{line}: COPY source '{src}' is empty")
                ignored = [f for f in files if dockerignored(f, patterns)]
                need(not ignored, f"Dockerfile:{line}: COPY source '{src}' is excluded by .dockerignore ({ignored[:3]})")
                copied.add(norm.rstrip("/"))
    # Everything the configure step reads must be copied.
    for d in ["CMakeLists.txt", "include", "src"] + unconditional_subdirs((root / "CMakeLists.txt").read_text()):
        top = d.split("/")[0]
        need(top in copied or d in copied, f"the builder does not COPY '{d}', which the top-level CMakeLists.txt needs")

    # Runtime stage.
    f_ins = {op: (args, line) for op, args, line in final["ins"]}
    need("USER" in f_ins, "final stage has no USER")
    user = [a for op, a, _ in final["ins"] if op == "USER"][-1]
    uid = user.split(":")[0]
    need(uid.isdigit() and int(uid) != 0, f"final stage USER {user}: must be a numeric non-root uid")
    need(uid == str(BROKER_UID), f"final stage USER {user}: expected {BROKER_UID}:{BROKER_UID}")
    need("HEALTHCHECK" in f_ins, "final stage has no HEALTHCHECK")
    hc = f_ins["HEALTHCHECK"][0]
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", hc)
    need(m is not None, f"HEALTHCHECK must be CMD [exec form]: {hc}")
    hc_cmd = parse_exec_form(m.group(1), "HEALTHCHECK CMD")
    need(hc_cmd[:2] == [BROKER_BIN, "probe"] and len(hc_cmd) == 3, f"HEALTHCHECK must run '{BROKER_BIN} probe URL' (no curl in the image)")
    u = urlsplit(hc_cmd[2])
    need(u.path == "/healthz", f"HEALTHCHECK URL path is {u.path}, expected /healthz")
    need("EXPOSE" in f_ins, "final stage has no EXPOSE")
    exposed = f_ins["EXPOSE"][0].split()
    need(f"{u.port}" in [e.split("/")[0] for e in exposed], f"HEALTHCHECK port {u.port} is not EXPOSEd ({exposed})")
    need("ENTRYPOINT" in f_ins and parse_exec_form(f_ins["ENTRYPOINT"][0], "ENTRYPOINT") == [BROKER_BIN],
         f"ENTRYPOINT must be [\"{BROKER_BIN}\"]")
    need("CMD" in f_ins and parse_exec_form(f_ins["CMD"][0], "CMD") == ["--config", CONFIG_PATH],
         f"CMD must be [\"--config\", \"{CONFIG_PATH}\"]")
    # Non-final stages may run as root (the transparent-init one must); say so explicitly.
    for st in stages[1:-1]:
        users = [a for op, a, _ in st["ins"] if op == "USER"]
        need(users, f"stage {st['name']}: set USER explicitly")
    return f"{len(stages)} stages: " + ", ".join(f"{s['name']}<-{s['base']}" for s in stages)


def rootfs_smoke(root: Path, binary: str) -> str:
    """Runs the Dockerfile's rootfs-assembly RUN step on BINARY and chroots into the result."""
    need(os.geteuid() == 0, "needs root (chroot)")
    ins = dockerfile_instructions((root / "Dockerfile").read_text())
    runs = [a for op, a, _ in ins if op == "RUN" and "root=/rootfs" in a]
    need(len(runs) == 1, "expected one RUN step with root=/rootfs")
    script = runs[0]
    tmp = Path(tempfile.mkdtemp(prefix="ficbroker-rootfs."))
    try:
        # The build stage strips the binary before this step; do the same to a copy.
        stripped = tmp / "ficbroker"
        shutil.copy2(binary, stripped)
        subprocess.run(["strip", "--strip-all", str(stripped)], check=True, timeout=120)
        script = script.replace("root=/rootfs", f"root={tmp}/rootfs")
        script = script.replace("build/src/ficbroker", str(stripped))
        proc = subprocess.run(["/bin/sh", "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
        need(proc.returncode == 0, f"rootfs step failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        size = sum(f.stat().st_size for f in (tmp / "rootfs").rglob("*") if f.is_file())
        version = [l for l in proc.stdout.splitlines() if l.strip()]
        # The probe subcommand must run too (the HEALTHCHECK): a closed port must give a non-zero exit.
        pr = subprocess.run(["chroot", str(tmp / "rootfs"), BROKER_BIN, "probe", "http://127.0.0.1:9/healthz"],
                            capture_output=True, text=True, timeout=30)
        need(pr.returncode not in (0, 126, 127) and pr.returncode < 128,
             f"'ficbroker probe' in the rootfs exited {pr.returncode}: {pr.stderr.strip()[-300:]}")
        need(size < 30 * 1024 * 1024, f"runtime rootfs is {size / 1048576:.1f} MiB (>= 30 MiB)")
        libs = sorted(str(p.relative_to(tmp / "rootfs")) for p in (tmp / "rootfs").rglob("*.so*"))
        return f"{size / 1048576:.1f} MiB, libs: {', '.join(libs)}; {' | '.join(version[-3:])}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def simulate_build_stage(root: Path) -> str:
    """The Dockerfile's build stage without Docker: the COPYs (honouring .dockerignore) into an empty
    directory, then its RUN steps except apt-get (this machine must have the same packages), then the
    runtime rootfs in a chroot. Slow (a Release build): run.sh does it only with --context-build."""
    need(os.geteuid() == 0, "needs root (chroot)")
    ins = dockerfile_instructions((root / "Dockerfile").read_text())
    stages, current = [], None
    for op, args, line in ins:
        if op == "FROM":
            current = []
            stages.append(current)
        elif current is not None:
            current.append((op, args, line))
    build = stages[0]
    patterns = dockerignore_patterns(root)
    tmp = Path(tempfile.mkdtemp(prefix="ficbroker-context."))
    try:
        workdir = tmp / "src"
        workdir.mkdir()
        copied = 0
        rootfs = None
        for op, args, line in build:
            if op == "WORKDIR":
                need(args.strip() == "/src", f"Dockerfile:{line}: expected WORKDIR /src")
            elif op == "COPY":
                words = [w for w in args.split() if not w.startswith("--")]
                *sources, dest = words
                for src in sources:
                    norm = posixpath.normpath(src).lstrip("/")
                    for f in context_files(root, norm):
                        if dockerignored(f, patterns):
                            continue
                        rel = Path(f).relative_to(norm) if (root / norm).is_dir() else Path(Path(f).name)
                        target = workdir / dest / rel if dest.endswith("/") or (root / norm).is_dir() else workdir / dest
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(root / f, target)
                        copied += 1
            elif op == "RUN":
                if "apt-get" in args:
                    continue
                script = args.replace("root=/rootfs", f"root={tmp}/rootfs")
                if "root=" in script:
                    rootfs = tmp / "rootfs"
                proc = subprocess.run(["/bin/sh", "-c", script], cwd=workdir, capture_output=True, text=True,
                                      timeout=3600)
                need(proc.returncode == 0,
                     f"Dockerfile:{line}: RUN failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-1500:]}")
        need(rootfs is not None and (rootfs / BROKER_BIN.lstrip("/")).exists(), "the build stage made no rootfs")
        size = sum(f.stat().st_size for f in rootfs.rglob("*") if f.is_file())
        need(size < 30 * 1024 * 1024, f"runtime rootfs is {size / 1048576:.1f} MiB (>= 30 MiB)")
        return f"{copied} context files, Release build OK, rootfs {size / 1048576:.1f} MiB"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# systemd unit (static part; run.sh runs systemd-analyze)
# --------------------------------------------------------------------------------------------
REQUIRED_UNIT = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
}


def check_systemd_unit(root: Path) -> str:
    path = root / "deploy/systemd/ficbroker.service"
    section, kv = None, {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        need("=" in line, f"ficbroker.service: cannot parse '{line}'")
        k, v = line.split("=", 1)
        kv.setdefault((section, k.strip()), []).append(v.strip())
    svc = {k: v for (s, k), v in kv.items() if s == "Service"}
    for k, expected in REQUIRED_UNIT.items():
        need(k in svc, f"[Service] {k}= missing")
        need(expected in svc[k], f"[Service] {k}={svc[k][-1]!r}, expected {expected!r}")
    need("@system-service" in svc.get("SystemCallFilter", [""])[0], "SystemCallFilter=@system-service missing")
    need(any(v for v in svc.get("MemoryMax", [])), "MemoryMax= missing")
    need(any(v.startswith("identity-header:") for v in svc.get("LoadCredential", [])),
         "LoadCredential=identity-header:… missing")
    need(svc.get("DynamicUser", ["no"])[-1] == "yes" or svc.get("User"), "DynamicUser=yes or User= needed")
    start = svc.get("ExecStart", [""])[-1].split()
    need(start[:1] == [BROKER_BIN] and "--config" in start, f"ExecStart must run {BROKER_BIN} --config …")
    cfg = start[start.index("--config") + 1]
    need(cfg == CONFIG_PATH, f"ExecStart config {cfg}, expected {CONFIG_PATH}")
    # The VM example config must read the header from the credentials directory.
    facts = validate_config(parse_jsonc((root / "config/vm-imds.jsonc").read_text(), "vm-imds.jsonc"), "vm-imds.jsonc")
    need(facts["identity_header_file"] == "/run/credentials/ficbroker.service/identity-header",
         "config/vm-imds.jsonc identity_header_file must be /run/credentials/ficbroker.service/identity-header")
    readyz = [v for v in svc.get("ExecStartPost", []) if f"127.0.0.1:{facts['port']}/readyz" in v]
    need(readyz, f"ExecStartPost must wait for http://127.0.0.1:{facts['port']}/readyz")
    unit = {k: v for (s, k), v in kv.items() if s == "Unit"}
    need("ficbroker.socket" in " ".join(unit.get("Requires", [])),
         "[Unit] Requires=ficbroker.socket missing: a crash would free the port for anyone")
    sock = (root / "deploy/systemd/ficbroker.socket").read_text()
    listen = re.search(r"^ListenStream=(\S+)$", sock, re.M)
    need(listen is not None, "ficbroker.socket: ListenStream= missing")
    need(listen.group(1) == f"{facts['host']}:{facts['port']}",
         f"ficbroker.socket ListenStream={listen.group(1)} differs from the config's listen "
         f"{facts['host']}:{facts['port']}")
    need(re.search(r"^Accept=no$", sock, re.M) is not None, "ficbroker.socket: Accept=no needed")
    return f"{len(svc)} [Service] settings, socket {listen.group(1)}"


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------
EXAMPLE_CONFIGS = ["kubernetes-sidecar", "vm-imds", "app-service", "workload-identity"]


def check_yaml_parses(root: Path) -> str:
    files = sorted(p for p in (root / "deploy").rglob("*") if p.suffix in (".yaml", ".yml") and "templates" not in p.parts)
    files += sorted((root / "tests/deploy").rglob("*.yaml"))
    need(files, "no YAML files found under deploy/")
    for f in files:
        try:
            docs = load_yaml_docs(f)
        except yaml.YAMLError as e:
            raise CheckError(f"{f.relative_to(root)}: {e}") from None
        for d in docs:
            need(isinstance(d, dict), f"{f.relative_to(root)}: a document is not a mapping")
            if "kubernetes" in f.parts:
                need("apiVersion" in d and "kind" in d and "name" in (d.get("metadata") or {}),
                     f"{f.relative_to(root)}: a document lacks apiVersion/kind/metadata.name")
    return f"{len(files)} files"


def check_example_config(root: Path, name: str) -> str:
    path = root / "config" / f"{name}.jsonc"
    text = path.read_text()
    need(re.search(r"^\s*//", text, re.M) is not None, f"{path.name}: should explain its keys in comments")
    facts = validate_config(parse_jsonc(text, path.name), path.name)
    need(facts["prewarm"], f"{path.name}: no prewarm resources, so /readyz gates nothing")
    return f"listen {facts['host']}:{facts['port']}, sources {sorted(facts['source_types'])}"


def configmap_text(path: Path, name: str) -> str:
    cms = find_kind(load_yaml_docs(path), "ConfigMap", name)
    need(cms, f"{path.name}: ConfigMap {name} not found")
    return cms[0]["data"]["config.jsonc"]


def check_configmaps_match(root: Path) -> str:
    k = root / "deploy/kubernetes"
    base = (root / "config/kubernetes-sidecar.jsonc").read_text()
    need(configmap_text(k / "configmap.yaml", "ficbroker-config") == base,
         "deploy/kubernetes/configmap.yaml config.jsonc differs from config/kubernetes-sidecar.jsonc")
    wi = (root / "config/workload-identity.jsonc").read_text()
    need(configmap_text(k / "sidecar-workload-identity.yaml", "ficbroker-config-wi") == wi,
         "sidecar-workload-identity.yaml config.jsonc differs from config/workload-identity.jsonc")
    tp = parse_jsonc(configmap_text(k / "transparent-mode.yaml", "ficbroker-config-transparent"), "transparent ConfigMap")
    expected = dict(parse_jsonc(base, "kubernetes-sidecar.jsonc"), transparent=True)
    need(tp == expected, "transparent-mode.yaml config must be config/kubernetes-sidecar.jsonc with \"transparent\": true")
    values = yaml.safe_load((root / "deploy/helm/ficbroker/values.yaml").read_text())
    need(values["config"]["config.jsonc"] == base, "Helm values config.jsonc differs from config/kubernetes-sidecar.jsonc")
    return "configmap.yaml, workload identity, transparent, Helm values"


def check_manifest_file(root: Path, rel: str) -> str:
    path = root / "deploy/kubernetes" / rel
    docs = load_yaml_docs(path)
    deps = find_kind(docs, "Deployment")
    need(len(deps) == 1, f"{rel}: expected one Deployment, found {len(deps)}")
    others = docs + load_yaml_docs(root / "deploy/kubernetes/configmap.yaml")
    return check_deployment(deps[0], others, rel)


def check_secret_example(root: Path) -> str:
    docs = load_yaml_docs(root / "deploy/kubernetes/secret.example.yaml")
    need(len(docs) == 1 and docs[0]["kind"] == "Secret", "secret.example.yaml must hold one Secret")
    s = docs[0]
    need(s["metadata"]["name"] == "ficbroker-identity-header", "Secret must be named ficbroker-identity-header")
    need("identity-header" in (s.get("stringData") or s.get("data") or {}), "Secret needs key identity-header")
    return "ficbroker-identity-header/identity-header"


# Helm ------------------------------------------------------------------------------------------
def render_chart(root: Path, release: str, overrides: dict) -> list:
    chart = root / "deploy/helm/ficbroker"
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    need(meta.get("apiVersion") == "v2" and meta.get("name") == "ficbroker", "Chart.yaml: apiVersion v2, name ficbroker")
    need(re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(meta.get("version", ""))), "Chart.yaml: version must be SemVer")
    need(meta.get("appVersion"), "Chart.yaml: appVersion missing")
    values = deep_merge(yaml.safe_load((chart / "values.yaml").read_text()), overrides)
    docs = []
    templates = sorted((chart / "templates").glob("*.yaml"))
    need(templates, "no templates")
    for t in templates:
        out = render_helm(t.read_text(), values, release, f"templates/{t.name}")
        try:
            docs += [d for d in yaml.safe_load_all(out) if d is not None]
        except yaml.YAMLError as e:
            raise CheckError(f"templates/{t.name} renders to invalid YAML: {e}") from None
    for t in (chart / "templates").glob("*.txt"):
        render_helm(t.read_text(), values, release, f"templates/{t.name}")
    return docs


def normalise(obj, drop_instance=True):
    obj = copy.deepcopy(obj)

    def walk(o):
        if isinstance(o, dict):
            labels = o.get("labels")
            if drop_instance and isinstance(labels, dict):
                labels.pop("app.kubernetes.io/instance", None)
            if "configMap" in o and isinstance(o["configMap"], dict):
                o["configMap"]["name"] = "<config>"
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return obj


def first_difference(a, b, path="") -> str | None:
    if type(a) is not type(b):
        return f"{path or '/'}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}/{k}: only in {'chart' if k in a else 'manifest'}"
            d = first_difference(a[k], b[k], f"{path}/{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: chart {a!r} vs manifest {b!r}"


HELM_VARIANTS = {
    # name: (plain manifest, overrides builder)
    "default": ("sidecar-pod.yaml", lambda root: {}),
    "workload-identity": ("sidecar-workload-identity.yaml", lambda root: {
        "app": {"name": "demo-app-wi"},
        "workloadIdentity": {"enabled": True},
        "config": {"config.jsonc": (root / "config/workload-identity.jsonc").read_text()},
    }),
    "transparent": ("transparent-mode.yaml", lambda root: {
        "app": {"name": "demo-app-transparent"},
        "transparent": {"enabled": True},
        "config": {"config.jsonc": configmap_text(root / "deploy/kubernetes/transparent-mode.yaml",
                                                  "ficbroker-config-transparent")},
    }),
}


def check_helm_variant(root: Path, variant: str) -> str:
    manifest, overrides = HELM_VARIANTS[variant]
    docs = render_chart(root, "ficbroker", overrides(root))
    deps = find_kind(docs, "Deployment")
    need(len(deps) == 1, f"chart renders {len(deps)} Deployments")
    detail = check_deployment(deps[0], docs, f"helm[{variant}]")
    plain_docs = load_yaml_docs(root / "deploy/kubernetes" / manifest)
    plain = find_kind(plain_docs, "Deployment")[0]
    diff = first_difference(normalise(deps[0]), normalise(plain))
    need(diff is None, f"helm[{variant}] Deployment differs from {manifest}: {diff}")
    if variant == "default":
        cm = find_kind(docs, "ConfigMap", "ficbroker-config")
        need(cm, "chart does not render ConfigMap ficbroker-config for release 'ficbroker'")
        plain_cm = load_yaml_docs(root / "deploy/kubernetes/configmap.yaml")[0]
        diff = first_difference(normalise(cm[0]), normalise(plain_cm))
        need(diff is None, f"helm ConfigMap differs from configmap.yaml: {diff}")
        need(not find_kind(docs, "Secret") and not find_kind(docs, "ServiceAccount"),
             "defaults must not render a Secret or ServiceAccount")
    if variant == "workload-identity":
        sa = find_kind(docs, "ServiceAccount")
        plain_sa = find_kind(plain_docs, "ServiceAccount")
        need(sa and plain_sa, "ServiceAccount missing")
        diff = first_difference(normalise(sa[0]), normalise(plain_sa[0]))
        need(diff is None, f"helm ServiceAccount differs from {manifest}: {diff}")
    return f"same Deployment as {manifest}; {detail}"


def check_helm_secret_toggle(root: Path) -> str:
    docs = render_chart(root, "ficbroker", {"identityHeader": {"create": True, "value": "0123456789abcdef0123"},
                                           "app": {"extraEnv": [{"name": "EXTRA", "value": "1"}]}})
    secrets = find_kind(docs, "Secret", "ficbroker-identity-header")
    need(secrets and secrets[0]["stringData"]["identity-header"] == "0123456789abcdef0123",
         "identityHeader.create does not render the Secret")
    app = find_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    need(env_map(app).get("EXTRA", {}).get("value") == "1", "app.extraEnv is not rendered")
    return "Secret and extraEnv render"


def check_versions(root: Path) -> str:
    """The project version (CMake), the chart's appVersion and every image tag agree."""
    m = re.search(r"project\s*\(\s*ficbroker\s+VERSION\s+([0-9][0-9A-Za-z.+-]*)", (root / "CMakeLists.txt").read_text())
    need(m is not None, "CMakeLists.txt: project(ficbroker VERSION x.y.z) not found")
    version = m.group(1)
    chart = root / "deploy/helm/ficbroker"
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    need(str(meta.get("appVersion")) == version, f"Chart.yaml appVersion {meta.get('appVersion')} != project version {version}")
    values = yaml.safe_load((chart / "values.yaml").read_text())
    need(str(values["image"]["tag"]) == version, f"values.yaml image.tag {values['image']['tag']} != {version}")
    need(values["transparent"]["image"].endswith(":" + version), f"values.yaml transparent.image is not tagged {version}")
    images = []
    for f in sorted((root / "deploy/kubernetes").glob("*.yaml")):
        images += [(f.name, i) for i in re.findall(r"^\s*image:\s*(\S+)", f.read_text(), re.M) if "ficbroker" in i]
    need(images, "no ficbroker images in deploy/kubernetes")
    wrong = [f"{n}: {i}" for n, i in images if not i.endswith(":" + version)]
    need(not wrong, f"images not tagged {version}: {wrong}")
    return f"{version} everywhere ({len(images)} image references)"


# Dry-run output of the Azure scripts ------------------------------------------------------------
def check_snippet(text: str) -> str:
    start = text.find("{")
    need(start >= 0, "no JSON object in the output")
    cfg = parse_jsonc(text[start:], "snippet")
    need("targets" in cfg and cfg["targets"], "snippet has no targets")
    validate_config(cfg, "snippet", partial=True)
    return "valid"


# --------------------------------------------------------------------------------------------
def run_all(root: Path, res: Results) -> None:
    if yaml is None:
        res.run("python3-yaml", lambda: need(False, "PyYAML missing: apt-get install -y python3-yaml; run with /usr/bin/python3"))
        return
    res.run("yaml: every file parses", check_yaml_parses, root)
    for name in EXAMPLE_CONFIGS:
        res.run(f"config/{name}.jsonc: schema", check_example_config, root, name)
    res.run("configmaps equal config/*.jsonc", check_configmaps_match, root)
    res.run("k8s secret.example.yaml", check_secret_example, root)
    for rel in ("sidecar-pod.yaml", "sidecar-workload-identity.yaml", "transparent-mode.yaml"):
        res.run(f"k8s {rel}", check_manifest_file, root, rel)
    for variant in HELM_VARIANTS:
        res.run(f"helm render [{variant}]", check_helm_variant, root, variant)
    res.run("helm render [secret+extraEnv]", check_helm_secret_toggle, root)
    res.run("versions agree (CMake, Chart, image tags)", check_versions, root)
    res.run("dockerfile static", check_dockerfile, root)
    res.run("systemd unit directives", check_systemd_unit, root)


# Self-test: each mutation breaks one thing in a copy of the tree; the named check must fail.
MUTATIONS = [
    # (description, file, old, new, check that must fail)
    ("native sidecar restartPolicy removed", "deploy/kubernetes/sidecar-pod.yaml",
     "          restartPolicy: Always\n", "", "k8s sidecar-pod.yaml"),
    ("startupProbe on /healthz", "deploy/kubernetes/sidecar-pod.yaml",
     "8181/readyz", "8181/healthz", "k8s sidecar-pod.yaml"),
    ("livenessProbe on /livez", "deploy/kubernetes/sidecar-pod.yaml",
     "8181/healthz", "8181/livez", "k8s sidecar-pod.yaml"),
    ("httpGet probe against a loopback listener", "deploy/kubernetes/sidecar-pod.yaml",
     '            exec:\n              command: ["/usr/local/bin/ficbroker", "probe", "http://127.0.0.1:8181/readyz"]\n',
     "            httpGet:\n              path: /readyz\n              port: 8181\n", "k8s sidecar-pod.yaml"),
    ("IDENTITY_HEADER as a literal", "deploy/kubernetes/sidecar-pod.yaml",
     "              valueFrom:\n                secretKeyRef:\n                  name: ficbroker-identity-header\n                  key: identity-header\n",
     '              value: "not-a-secret"\n', "k8s sidecar-pod.yaml"),
    ("AZURE_POD_IDENTITY_AUTHORITY_HOST with a trailing slash", "deploy/kubernetes/sidecar-pod.yaml",
     'value: "http://127.0.0.1:8181"\n', 'value: "http://127.0.0.1:8181/"\n', "k8s sidecar-pod.yaml"),
    ("writable root file system", "deploy/kubernetes/sidecar-pod.yaml",
     "            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            privileged: false\n            capabilities:\n              drop: [ALL]\n            seccompProfile:\n              type: RuntimeDefault\n          volumeMounts:",
     "            readOnlyRootFilesystem: false\n            allowPrivilegeEscalation: false\n            privileged: false\n            capabilities:\n              drop: [ALL]\n            seccompProfile:\n              type: RuntimeDefault\n          volumeMounts:",
     "k8s sidecar-pod.yaml"),
    ("no memory limit", "deploy/kubernetes/sidecar-pod.yaml",
     "              cpu: 200m\n              memory: 64Mi\n", "              cpu: 200m\n", "k8s sidecar-pod.yaml"),
    ("secret readable by others", "deploy/kubernetes/sidecar-pod.yaml",
     "defaultMode: 0440", "defaultMode: 0444", "k8s sidecar-pod.yaml"),
    ("secret unreadable by ficbroker (no fsGroup)", "deploy/kubernetes/sidecar-pod.yaml",
     "        fsGroup: 10001\n", "", "k8s sidecar-pod.yaml"),
    ("transparent init gets SYS_ADMIN", "deploy/kubernetes/transparent-mode.yaml",
     "add: [NET_ADMIN]", "add: [NET_ADMIN, SYS_ADMIN]", "k8s transparent-mode.yaml"),
    ("transparent init privileged", "deploy/kubernetes/transparent-mode.yaml",
     "            runAsGroup: 0\n            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            privileged: false\n",
     "            runAsGroup: 0\n            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            privileged: true\n",
     "k8s transparent-mode.yaml"),
    ("app runs as ficbroker's uid in transparent mode", "deploy/kubernetes/transparent-mode.yaml",
     "            runAsUser: 10002\n", "            runAsUser: 10001\n", "k8s transparent-mode.yaml"),
    ("workload identity without skip-containers", "deploy/kubernetes/sidecar-workload-identity.yaml",
     '        azure.workload.identity/skip-containers: "app"\n', "", "k8s sidecar-workload-identity.yaml"),
    ("ConfigMap drifts from config/kubernetes-sidecar.jsonc", "deploy/kubernetes/configmap.yaml",
     '"listen": "127.0.0.1:8181"', '"listen": "127.0.0.1:8182"', "configmaps equal config/*.jsonc"),
    ("unknown key in an example config", "config/vm-imds.jsonc",
     '"log_level": "info",', '"log_level": "info",\n  "listen_port": 8181,', "config/vm-imds.jsonc: schema"),
    ("broken YAML", "deploy/kubernetes/secret.example.yaml",
     "type: Opaque\n", "type: Opaque\n  bad: [indent\n", "yaml: every file parses"),
    ("Helm template probe path drifts", "deploy/helm/ficbroker/templates/deployment.yaml",
     "/readyz", "/ready", "helm render [default]"),
    ("Helm template uses an unsupported function", "deploy/helm/ficbroker/templates/deployment.yaml",
     "containerPort: {{ .Values.port }}", "containerPort: {{ .Values.port | int }}", "helm render [default]"),
    ("Helm values drop the memory limit", "deploy/helm/ficbroker/values.yaml",
     "    cpu: 200m\n    memory: 64Mi\n", "    cpu: 200m\n", "helm render [default]"),
    ("a manifest's image tag lags the project version", "deploy/kubernetes/transparent-mode.yaml",
     "image: ficbroker-transparent-init:0.1.0", "image: ficbroker-transparent-init:0.0.9",
     "versions agree (CMake, Chart, image tags)"),
    ("Dockerfile runs as root", "Dockerfile", "USER 10001:10001", "USER root", "dockerfile static"),
    ("Dockerfile without HEALTHCHECK", "Dockerfile",
     "HEALTHCHECK --interval", "# HEALTHCHECK --interval", "dockerfile static"),
    ("Dockerfile COPYs a missing path", "Dockerfile",
     "COPY emulator/ emulator/", "COPY emulator/ emulator/\nCOPY third_party/ third_party/", "dockerfile static"),
    (".dockerignore excludes a COPY source", ".dockerignore", "!src/\n", "", "dockerfile static"),
    ("CMake needs a directory the Dockerfile does not COPY", "CMakeLists.txt",
     "add_subdirectory(src)", "add_subdirectory(src)\nadd_subdirectory(third_party)", "dockerfile static"),
    ("Dockerfile COPY --from an unknown stage", "Dockerfile",
     "COPY --from=build /rootfs/ /", "COPY --from=builder /rootfs/ /", "dockerfile static"),
    ("systemd unit without NoNewPrivileges", "deploy/systemd/ficbroker.service",
     "NoNewPrivileges=yes\n", "", "systemd unit directives"),
    ("systemd unit with a writable /usr", "deploy/systemd/ficbroker.service",
     "ProtectSystem=strict", "ProtectSystem=full", "systemd unit directives"),
]

SELF_TEST_COPY = ["Dockerfile", ".dockerignore", "CMakeLists.txt", "config", "deploy", "include", "src", "emulator",
                  "tests/deploy"]


def copy_tree(root: Path, dest: Path) -> None:
    for rel in SELF_TEST_COPY:
        s = root / rel
        d = dest / rel
        if s.is_dir():
            shutil.copytree(s, d, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif s.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)


def self_test(root: Path, res: Results) -> None:
    base = Results(quiet=True)
    run_all(root, base)
    res.run("self-test: unmodified tree passes", lambda: need(not base.failed, f"failures: {base.failed[:2]}"))
    for desc, rel, old, new, expected in MUTATIONS:
        def one(desc=desc, rel=rel, old=old, new=new, expected=expected):
            with tempfile.TemporaryDirectory(prefix="ficbroker-mut.") as tmp:
                t = Path(tmp)
                copy_tree(root, t)
                f = t / rel
                text = f.read_text()
                need(text.count(old) >= 1, f"mutation does not apply: {old[:60]!r} not in {rel}")
                f.write_text(text.replace(old, new, 1))
                r = Results(quiet=True)
                run_all(t, r)
                failed = {n: m for n, m in r.failed}
                need(expected in failed, f"'{expected}' did not fail (failed: {sorted(failed) or 'nothing'})")
                return failed[expected][:110]
        res.run(f"mutation detected: {desc}", one)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--snippet", help="validate a config snippet (file, or - for stdin)")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--rootfs-smoke", metavar="BINARY")
    ap.add_argument("--context-build", action="store_true",
                    help="run the Dockerfile's build stage without Docker (slow)")
    args = ap.parse_args()
    root = args.root.resolve()
    res = Results()
    if args.snippet:
        text = sys.stdin.read() if args.snippet == "-" else Path(args.snippet).read_text()
        res.run("snippet", check_snippet, text)
    elif args.rootfs_smoke:
        res.run("dockerfile rootfs in chroot", rootfs_smoke, root, os.path.abspath(args.rootfs_smoke))
    elif args.context_build:
        res.run("dockerfile build stage without Docker", simulate_build_stage, root)
    elif args.self_test:
        self_test(root, res)
    else:
        run_all(root, res)
    print(f"@@counts {len(res.passed)} {len(res.failed)}")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
