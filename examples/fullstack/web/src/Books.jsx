// The list of books the API serves, with the API's version.
export function Books({ data, error }) {
  if (error) return <p role="alert">API unavailable: {error}</p>;
  if (!data) return <p>Loading…</p>;
  return (
    <section>
      <h1>Books</h1>
      <ul>
        {data.books.map((b) => (
          <li key={b.id}>
            {b.title} ({b.year})
          </li>
        ))}
      </ul>
      <p>api version {data.version}</p>
    </section>
  );
}

export async function loadBooks(fetchImpl = fetch) {
  const response = await fetchImpl("/api/books");
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}
