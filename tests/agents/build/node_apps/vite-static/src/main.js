import { greeting } from "./greeting.js";

document.querySelector("#title").textContent = greeting("catalogue");
