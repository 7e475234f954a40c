// Node runner: node rfc9605.mjs rfc9605-test-vectors-025d568.json → {"headers":…,"sframe":…,"aes_ctr_hmac":…}
import { readFileSync } from "node:fs";
import { checkRfc9605 } from "./check_vectors.mjs";

console.log(JSON.stringify(await checkRfc9605(readFileSync(process.argv[2], "utf8"))));
