import { renderToString } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Books, loadBooks } from "../src/Books.jsx";

describe("Books", () => {
  it("lists the books and the API version", () => {
    const html = renderToString(<Books data={{ books: [{ id: 1, title: "Accelerate", year: 2018 }], version: "v4" }} />);
    expect(html).toContain("<li>Accelerate<!-- --> (<!-- -->2018<!-- -->)</li>");
    expect(html).toContain("api version <!-- -->v4");
  });

  it("says when the API is unavailable", () => {
    expect(renderToString(<Books error="HTTP 502" />)).toContain("API unavailable: <!-- -->HTTP 502");
  });

  it("loads from /api/books and refuses an error status", async () => {
    const seen = [];
    const ok = async (url) => (seen.push(url), { ok: true, json: async () => ({ books: [] }) });
    expect(await loadBooks(ok)).toEqual({ books: [] });
    expect(seen).toEqual(["/api/books"]);
    await expect(loadBooks(async () => ({ ok: false, status: 503 }))).rejects.toThrow("HTTP 503");
  });
});
