/** A self-contained server in .next/standalone: the image needs no node_modules of its own. */
const nextConfig = { output: "standalone" };

export default nextConfig;
