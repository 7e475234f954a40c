// Loads both vector files, runs the checks in a module worker, and POSTs the outcome to /result
// (the test's HTTP server), so the Rust test reads what Chromium's WebCrypto computed.
const text = async (p) => (await fetch(p)).text();
const report = (body) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
try {
  const [independent, rfc9605] = await Promise.all([
    text("/vectors/sotto-codec-aware-independent.json"),
    text("/vectors/rfc9605-test-vectors-025d568.json"),
  ]);
  const worker = new Worker("worker.mjs", { type: "module" });
  worker.onmessage = ({ data }) => report({ userAgent: navigator.userAgent, ...data });
  worker.onerror = (e) => report({ error: `worker: ${e.message}` });
  worker.postMessage({ independent, rfc9605 });
} catch (e) {
  report({ error: String(e) });
}
