import { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { Books, loadBooks } from "./Books.jsx";

function App() {
  const [state, setState] = useState({});
  useEffect(() => {
    loadBooks().then((data) => setState({ data }), (e) => setState({ error: e.message }));
  }, []);
  return <Books data={state.data} error={state.error} />;
}

createRoot(document.getElementById("root")).render(<App />);
