export default function Home() {
  return <p>eval</p>;
}
