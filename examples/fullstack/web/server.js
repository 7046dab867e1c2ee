// Serves the built page (dist/), /health and Prometheus /metrics, and passes /api/* to the API,
// so the browser talks to one origin. Node's standard library only.
import { createReadStream, existsSync, statSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css",
  ".svg": "image/svg+xml", ".json": "application/json" };

export function createServer({ root, apiUrl, version = "dev" }) {
  const counts = new Map();
  const count = (status, route) => {
    const key = `path="${route}",status="${status}",version="${version}"`;
    counts.set(key, (counts.get(key) || 0) + 1);
  };
  const metrics = () => ["# HELP http_requests_total Web requests by version, status and path",
    "# TYPE http_requests_total counter",
    ...[...counts].map(([labels, n]) => `http_requests_total{${labels}} ${n}`), ""].join("\n");

  return http.createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    if (url.pathname === "/health") {
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ status: "ok", service: "web", version }));
    }
    if (url.pathname === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
      return res.end(metrics());
    }
    if (url.pathname.startsWith("/api/")) {
      const upstream = http.get(new URL(url.pathname + url.search, apiUrl), (reply) => {
        count(reply.statusCode, "/api");
        res.writeHead(reply.statusCode, { "content-type": reply.headers["content-type"] || "text/plain" });
        reply.pipe(res);
      });
      upstream.setTimeout(5000, () => upstream.destroy(new Error("timeout")));
      return upstream.on("error", (e) => {
        count(502, "/api");
        res.writeHead(502, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: `API unreachable: ${e.message}` }));
      });
    }
    let decoded;
    try {
      decoded = decodeURIComponent(url.pathname);
    } catch {
      count(400, "/");
      res.writeHead(400, { "content-type": "text/plain" });
      return res.end("bad path encoding");
    }
    const file = path.resolve(root, "." + path.posix.normalize(decoded));
    const inside = file.startsWith(root + path.sep);  // nothing outside dist/ is ever served
    const target = inside && existsSync(file) && statSync(file).isFile() ? file : path.join(root, "index.html");
    if (!existsSync(target)) {
      count(404, "/");
      res.writeHead(404, { "content-type": "text/plain" });
      return res.end("not built: run npm run build");
    }
    count(200, "/");
    res.writeHead(200, { "content-type": TYPES[path.extname(target)] || "application/octet-stream" });
    createReadStream(target).pipe(res);
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "dist");
  const server = createServer({ root, apiUrl: process.env.API_URL || "http://127.0.0.1:5002",
    version: process.env.APP_VERSION || "dev" });
  server.listen(Number(process.env.PORT || 8080), process.env.HOST || "127.0.0.1");
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}
