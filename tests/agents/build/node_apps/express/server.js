const express = require("express");

const app = express();
app.get("/health", (req, res) => res.json({ status: "ok" }));
app.get("/", (req, res) => res.json({ service: "orders", user: process.getuid() }));

const port = Number(process.env.PORT || 3000);
app.listen(port, process.env.HOST || "127.0.0.1");
