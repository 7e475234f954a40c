// Chromium: the vector checks inside a module DedicatedWorker, where the call screen's frame
// transform runs. Receives {independent, rfc9605} (file texts), answers with both results.
import { checkIndependent, checkRfc9605 } from "./check_vectors.mjs";

self.onmessage = async ({ data }) => {
  try {
    self.postMessage({
      independent: await checkIndependent(data.independent),
      rfc9605: await checkRfc9605(data.rfc9605),
    });
  } catch (e) {
    self.postMessage({ error: String(e) });
  }
};
