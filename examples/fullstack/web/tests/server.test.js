import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer } from "../server.js";

const listen = (server) => new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
const get = async (port, p) => {
  const r = await fetch(`http://127.0.0.1:${port}${p}`);
  return { status: r.status, body: await r.text() };
};

describe("web server", () => {
  let api, web, apiPort, webPort, root;
  beforeAll(async () => {
    const base = mkdtempSync(path.join(os.tmpdir(), "web-"));
    root = path.join(base, "dist");
    mkdirSync(root);
    writeFileSync(path.join(root, "index.html"), "<div id=root></div>");
    writeFileSync(path.join(base, "secret.txt"), "do not serve");
    api = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ path: req.url }));
    });
    apiPort = await listen(api);
    web = createServer({ root, apiUrl: `http://127.0.0.1:${apiPort}`, version: "w1" });
    webPort = await listen(web);
  });
  afterAll(() => { api.close(); web.close(); });

  it("answers /health with its version", async () => {
    expect(JSON.parse((await get(webPort, "/health")).body)).toEqual({ status: "ok", service: "web", version: "w1" });
  });

  it("serves the page and falls back to it for client routes", async () => {
    expect(await get(webPort, "/")).toEqual({ status: 200, body: "<div id=root></div>" });
    expect((await get(webPort, "/books/2")).body).toBe("<div id=root></div>");
  });

  it("passes /api/* to the API with the query", async () => {
    expect(JSON.parse((await get(webPort, "/api/books?x=1")).body)).toEqual({ path: "/api/books?x=1" });
  });

  it("never serves a file outside dist/", async () => {
    for (const p of ["/../secret.txt", "/..%2fsecret.txt", "/%2e%2e/secret.txt"]) {
      const { body } = await get(webPort, p);
      expect(body).not.toContain("do not serve");
    }
  });

  it("refuses a malformed path instead of crashing", async () => {
    expect((await get(webPort, "/%E0%A4%A")).status).toBe(400);
    expect((await get(webPort, "/health")).status).toBe(200);
  });

  it("says 502 when the API is down, and counts requests in /metrics", async () => {
    const down = createServer({ root, apiUrl: "http://127.0.0.1:9", version: "w2" });
    const port = await listen(down);
    const { status, body } = await get(port, "/api/books");
    expect(status).toBe(502);
    expect(body).toContain("API unreachable");
    const metrics = (await get(port, "/metrics")).body;
    expect(metrics).toContain('http_requests_total{path="/api",status="502",version="w2"} 1');
    down.close();
  });
});
