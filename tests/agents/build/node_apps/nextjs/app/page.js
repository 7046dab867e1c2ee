// Rendered on each request by the Next.js server, so the page shows who serves it.
export const dynamic = "force-dynamic";

export default function Home() {
  return (
    <main>
      <h1>Storefront</h1>
      <p id="served-by">served by uid {process.getuid()}</p>
    </main>
  );
}
