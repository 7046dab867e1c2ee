const express = require("express");

const app = express();
app.get("/health", (req, res) => res.json({ status: "ok" }));
app.get("/", (req, res) => res.json({ version: process.env.APP_VERSION || "dev" }));
app.listen(Number(process.env.PORT || 3000), process.env.HOST || "127.0.0.1");
