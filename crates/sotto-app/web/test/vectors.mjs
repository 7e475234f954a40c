// Node runner: node vectors.mjs sotto-codec-aware-independent.json → {"opened":…,"resealed":…,"ratcheted":…}
import { readFileSync } from "node:fs";
import { checkIndependent } from "./check_vectors.mjs";

console.log(JSON.stringify(await checkIndependent(readFileSync(process.argv[2], "utf8"))));
