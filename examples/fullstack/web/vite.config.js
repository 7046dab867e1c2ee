import { defineConfig } from "vite";

// JSX through esbuild's automatic runtime: no Babel plugin, a small dependency tree.
export default defineConfig({
  esbuild: { jsx: "automatic" },
  build: { outDir: "dist" },
  test: {
    environment: "node",
    coverage: { provider: "v8", reporter: ["text", "json-summary"], include: ["src/**", "server.js"] },
  },
});
