// Real, unmodified @azure/identity clients against running ficbroker instances.
//
//   node compat.mjs PLAN.json          runs every job, one child process per (library, job), and
//                                      prints one JSON row per check on stdout
//   node compat.mjs --worker JOB.json  (internal) one job in a fresh process
//
// A fresh process per job matters: msal-node keeps the managed-identity source and a token cache
// in static state, so one process must not switch between App Service and IMDS set-ups, and a
// repeated (identity, scope) pair would be answered from msal's cache instead of by ficbroker.
// The environment is scrubbed of every AZURE_*/IDENTITY_*/MSI_*/IMDS_*/MSAL_* and proxy variable
// before the library is loaded: AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_FEDERATED_TOKEN_FILE
// would pre-empt managed identity, and a proxy would swallow loopback requests.
//
// package.json pins two @azure/identity generations (4.13.1 on msal-node 5; 4.9.1, aliased as
// azure-identity-4.9, on msal-node 3) and overrides the shared @azure/core-* layer to the last
// releases that still run on Node 18 (Debian bookworm's nodejs): newer ones call the global
// `crypto`, which Node 18 lacks. Both identity versions accept those ranges.

import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const SCRUB = /^(AZURE_|IDENTITY_|IMDS_|MSI_|MSAL_)|^(https?|all|no)_proxy$/i;
const CHECK_TIMEOUT_MS = 20000;
const WORKER_TIMEOUT_MS = 90000;
const MIN_VALIDITY_S = 300; // MSAL treats a token with less left as expired
// ficbroker derives expires_on from the moment it received Entra's answer + expires_in, so it can
// name a second or so after the JWT's exp; anything further off (hours, or "now") is a failure.
const EXP_SKEW_S = 5;

// The two @azure/identity generations under test: the newest 4.x that supports this machine's
// Node (msal-node 5) and the 4.x line built on msal-node 3, which many deployed apps still run.
const LIBS = ["@azure/identity", "azure-identity-4.9"];

function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

function libInfo(spec) {
  const dir = join(here, "node_modules", spec);
  const identity = readJson(join(dir, "package.json"));
  let msalDir = join(dir, "node_modules", "@azure", "msal-node");
  if (!existsSync(msalDir)) msalDir = join(here, "node_modules", "@azure", "msal-node");
  const msal = readJson(join(msalDir, "package.json"));
  return {
    spec,
    client: `Node ${process.version} @azure/identity ${identity.version} (msal-node ${msal.version})`,
  };
}

const short = (id) => (id && id.length > 12 ? `${id.slice(0, 8)}…${id.slice(-4)}` : String(id));

// ---- checks ----------------------------------------------------------------------------------

const expectLabel = (expect) =>
  expect.kind === "mi" ? "home MI token" : `tenant ${short(expect.tenant)} app token`;

function decodeClaims(jwt) {
  const parts = String(jwt).split(".");
  if (parts.length !== 3) throw new Error("the access token is not a JWT");
  return JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
}

function resourceOf(scope) {
  return scope.endsWith("/.default") ? scope.slice(0, -"/.default".length) : scope;
}

// expect: {kind: "target", tenant} or {kind: "mi"}; returns [problems, summary].
function verifyToken(world, expect, scope, accessToken, expiresOnS, refreshAfterMs) {
  const problems = [];
  const claims = decodeClaims(accessToken);
  const tenant = expect.kind === "mi" ? world.home_tenant : expect.tenant;
  const appid = expect.kind === "mi" ? world.uami_client_id : world.app_client_id;
  const aud = resourceOf(scope);
  if (claims.tid !== tenant) problems.push(`tid=${claims.tid}, want ${tenant}`);
  if (claims.iss !== `https://sts.windows.net/${tenant}/`) problems.push(`iss=${claims.iss}`);
  if (claims.appid !== appid) problems.push(`appid=${claims.appid}, want ${appid}`);
  if (claims.aud !== aud) problems.push(`aud=${claims.aud}, want ${aud}`);
  const now = Date.now() / 1000;
  const exp = Number(claims.exp);
  if (!Number.isFinite(expiresOnS)) {
    problems.push(`client expiry is ${expiresOnS}`);
  } else {
    if (expiresOnS > exp + EXP_SKEW_S) {
      problems.push(`client expiry ${expiresOnS} is ${expiresOnS - exp} s after the token's exp ${exp}`);
    }
    if (expiresOnS < now + MIN_VALIDITY_S) {
      problems.push(`client expiry ${Math.round(expiresOnS - now)} s away (< ${MIN_VALIDITY_S} s)`);
    }
  }
  if (refreshAfterMs !== undefined && refreshAfterMs !== null) {
    const r = refreshAfterMs / 1000;
    if (!(r > now - 5 && r < expiresOnS)) problems.push(`refreshAfter ${r} outside (now, expiresOn)`);
  }
  const summary =
    `tid=${short(claims.tid)} appid=${short(claims.appid)} aud=${claims.aud} ` +
    `expiresOn=exp${Math.round(expiresOnS - exp) >= 0 ? "+" : ""}${Math.round(expiresOnS - exp)}s ` +
    `(${Math.round((exp - now) / 60)} min)`;
  return [problems, summary];
}

// The outermost error's class plus, when msal relays ficbroker's answer, its error_description
// (which names the query parameter the client sent).
function errorText(e) {
  const message = String(e?.message ?? e).split("\n")[0];
  const relayed = /Description: (.*?)( - Correlation ID:|$)/.exec(message);
  const text = relayed ? `${e.name}: ficbroker said: ${relayed[1]}` : `${e?.name || "Error"}: ${message}`;
  return text.slice(0, 400);
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---- jobs ------------------------------------------------------------------------------------

const ROUTES = {
  app_service: "App Service 2019-08-01 (IDENTITY_ENDPOINT + IDENTITY_HEADER)",
  imds: "IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST)",
  cloud_shell: "Cloud Shell form POST (MSI_ENDPOINT)",
  dac_app_service: "DefaultAzureCredential → App Service env",
  dac_imds: "DefaultAzureCredential → IMDS env",
};

function routeEnv(route, broker) {
  switch (route) {
    case "app_service":
    case "dac_app_service":
      return { IDENTITY_ENDPOINT: `${broker.url}/msi/token`, IDENTITY_HEADER: broker.identity_header };
    case "imds":
    case "dac_imds":
      return { AZURE_POD_IDENTITY_AUTHORITY_HOST: broker.url };
    case "cloud_shell":
      return { MSI_ENDPOINT: `${broker.url}/metadata/identity/oauth2/token` };
    default:
      throw new Error(`unknown route ${route}`);
  }
}

const SLASH_SCOPE = "https://database.windows.net//.default";

// Every job: one route against one broker (named by its source type), a list of checks. Within a
// job no (identity, scope) pair repeats, so msal's own cache never answers in ficbroker's place.
function jobs(plan) {
  const world = plan.world;
  const target = { kind: "target", tenant: world.default_tenant };
  const mi = { kind: "mi" };
  const check = (selection, options, expect) => (scope) => ({ selection, options, expect, scope });
  const sys = check("system (no id)", {}, target);
  const byApp = check(`clientId = app ${short(world.app_client_id)}`, { clientId: world.app_client_id }, target);
  const byUami = check(`clientId = UAMI ${short(world.uami_client_id)}`, { clientId: world.uami_client_id }, mi);
  const byObject = check(`objectId = UAMI ${short(world.uami_object_id)} (sends object_id)`,
                         { objectId: world.uami_object_id }, mi);
  const byResource = (route) =>
    check(`resourceId = UAMI …/${world.uami_resource_id.split("/").pop()} ` +
            `(sends ${route === "imds" ? "msi_res_id" : "mi_res_id"})`,
          { resourceId: world.uami_resource_id }, mi);
  // Every selection, with a plain scope and with the trailing-slash resource's scope.
  const full = (route) => [
    sys("https://vault.azure.net/.default"), sys(SLASH_SCOPE),
    byApp("https://graph.microsoft.com/.default"), byApp(SLASH_SCOPE),
    byUami("https://storage.azure.com/.default"), byUami(SLASH_SCOPE),
    byObject("https://storage.azure.com/.default"), byObject(SLASH_SCOPE),
    byResource(route)("https://storage.azure.com/.default"), byResource(route)(SLASH_SCOPE),
  ];

  const out = [];
  out.push({ route: "app_service", source: "imds", checks: full("app_service") });
  out.push({ route: "imds", source: "imds", checks: full("imds") });
  out.push({
    route: "cloud_shell",
    source: "imds",
    checks: [sys("https://vault.azure.net/.default"), sys(SLASH_SCOPE)],
  });
  out.push({ route: "dac_imds", source: "imds", checks: [sys("https://cognitiveservices.azure.com/.default")] });
  out.push({
    route: "dac_app_service",
    source: "imds",
    checks: [sys("https://cognitiveservices.azure.com/.default")],
  });
  out.push({
    route: "app_service",
    source: "app_service",
    checks: [sys("https://vault.azure.net/.default"), sys(SLASH_SCOPE), byApp("https://graph.microsoft.com/.default"),
             byUami("https://storage.azure.com/.default")],
  });
  out.push({
    route: "imds",
    source: "workload_identity",
    checks: [sys("https://vault.azure.net/.default"), sys(SLASH_SCOPE), byApp("https://graph.microsoft.com/.default")],
  });
  out.push({
    route: "app_service",
    source: "file",
    checks: [sys("https://vault.azure.net/.default"), byApp("https://graph.microsoft.com/.default")],
  });
  return out;
}

// ---- worker ----------------------------------------------------------------------------------

async function worker(jobPath) {
  const { plan, job, lib } = readJson(jobPath);
  for (const key of Object.keys(process.env)) {
    if (SCRUB.test(key)) delete process.env[key];
  }
  const broker = plan.brokers[job.source];
  Object.assign(process.env, routeEnv(job.route, broker));
  const info = libInfo(lib);
  // Loaded only now, after the environment is final.
  const identity = await import(lib);
  for (const check of job.checks) {
    const row = {
      client: info.client,
      route: ROUTES[job.route],
      selection: check.selection,
      scope: check.scope,
      source: job.source,
      expect: expectLabel(check.expect),
    };
    try {
      const credential = job.route.startsWith("dac_")
        ? new identity.DefaultAzureCredential()
        : new identity.ManagedIdentityCredential({ ...check.options });
      const token = await withTimeout(credential.getToken(check.scope), CHECK_TIMEOUT_MS);
      if (!token) throw new Error("getToken returned null");
      const [problems, summary] = verifyToken(
        plan.world, check.expect, check.scope, token.token, token.expiresOnTimestamp / 1000,
        token.refreshAfterTimestamp);
      row.result = problems.length ? "FAIL" : "PASS";
      row.detail = problems.length ? problems.join("; ") : summary;
    } catch (e) {
      row.result = "FAIL";
      row.detail = errorText(e);
    }
    process.stdout.write(`${JSON.stringify(row)}\n`);
  }
}

// ---- main ------------------------------------------------------------------------------------

const children = new Set();
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    for (const child of children) child.kill("SIGKILL");
    process.exit(128 + (signal === "SIGTERM" ? 15 : 2));
  });
}

function runWorker(plan, job, lib, tmpDir, index) {
  return new Promise((resolve) => {
    const jobPath = join(tmpDir, `node-job-${index}.json`);
    writeFileSync(jobPath, JSON.stringify({ plan, job, lib }), { mode: 0o600 });
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!SCRUB.test(k)) env[k] = v;
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--worker", jobPath], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), WORKER_TIMEOUT_MS);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const rows = [];
      for (const line of stdout.split("\n").filter(Boolean)) {
        try {
          rows.push(JSON.parse(line));
        } catch {
          stderr += `\nunexpected output: ${line.slice(0, 200)}`;
        }
      }
      // A check that printed nothing (crash, timeout) is a failure, not a silent omission.
      const info = (() => {
        try {
          return libInfo(lib).client;
        } catch {
          return `Node ${process.version} ${lib}`;
        }
      })();
      for (const check of job.checks.slice(rows.length)) {
        rows.push({
          client: info,
          route: ROUTES[job.route],
          selection: check.selection,
          scope: check.scope,
          source: job.source,
          expect: expectLabel(check.expect),
          result: "FAIL",
          detail: `worker ended (code ${code}, signal ${signal}) before this check: ${stderr.trim().split("\n").pop() || ""}`.slice(0, 400),
        });
      }
      resolve(rows);
    });
  });
}

async function main(planPath) {
  const plan = readJson(planPath);
  const tmpDir = dirname(planPath);
  const tasks = [];
  let index = 0;
  for (const lib of LIBS) {
    for (const job of jobs(plan)) tasks.push({ lib, job, index: index++ });
  }
  // Two cores: a few workers at a time keep the run short without starving ficbroker.
  const results = new Array(tasks.length);
  let next = 0;
  const lanes = Array.from({ length: 4 }, async () => {
    while (next < tasks.length) {
      const t = tasks[next++];
      results[t.index] = await runWorker(plan, t.job, t.lib, tmpDir, t.index);
    }
  });
  await Promise.all(lanes);
  for (const rows of results) for (const row of rows) process.stdout.write(`${JSON.stringify(row)}\n`);
}

const args = process.argv.slice(2);
if (args[0] === "--worker") {
  await worker(args[1]);
  process.exit(0); // do not wait for a client's background retries
} else if (args.length === 1) {
  await main(args[0]);
} else {
  process.stderr.write("usage: node compat.mjs PLAN.json\n");
  process.exit(2);
}
