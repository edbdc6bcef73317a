// A real Tributary for the tests: `tributary serve` on a free port with its own TRIBUTARY_HOME
// (embedded SQLite + Redis, one web process, one worker), and its printed admin key.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function eventually(check, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(100);
  }
}

export async function startTributary() {
  const port = await freePort();
  const home = mkdtempSync(join(tmpdir(), "tributary-js-"));
  const env = { ...process.env, TRIBUTARY_HOME: home };
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  const python = process.env.PYTHON ?? "python";
  const child = spawn(python, ["-P", "-m", "tributary.app.cli", "serve", "--port", String(port), "--web-workers", "1"], {
    env,
    stdio: ["ignore", "pipe", "ignore"],
    detached: true,
  });
  const lines = createInterface({ input: child.stdout });
  let key;
  for await (const line of lines) {
    const match = /(trb_[A-Za-z0-9]+)/.exec(line);
    if (match) {
      key = match[1];
      break;
    }
  }
  if (!key) throw new Error("tributary serve printed no admin key");
  child.stdout.resume(); // keep draining, so a chatty server never blocks on a full pipe
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => {
    try {
      return (await fetch(`${url}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }, 30_000);
  const stop = async () => {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    process.kill(-child.pid, "SIGTERM");
    await exited;
    rmSync(home, { recursive: true, force: true });
  };
  const call = async (method, path, body, apiKey = key) => {
    const response = await fetch(url + path, {
      method,
      headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json().catch(() => null) };
  };
  return { url, key, stop, call };
}
