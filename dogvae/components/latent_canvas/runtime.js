// dogvae's latent canvas, part 1 of 2: onnxruntime-web (wasm, one thread) loaded once per
// page, one session per decoder, timed decodes, and loading ahead of a canvas. Streamlit
// runs runtime.js and latent_canvas.js as one module (the Python side joins them).
//
// Timings, for any script to read: "dogvae:decode" per decode, "dogvae:runtime"
// (onnxruntime loaded), "dogvae:session" (a decoder fetched and its session created).
//
// Streamlit evaluates the module once per page and calls its default export on every
// render with the new data; everything that must outlive a render (onnxruntime, one
// session per decoder URL, each instance's view) lives in STATE.

const STATE = (globalThis.__dogvaeLatentCanvas ??= {
  ort: null, // Promise of the onnxruntime-web module
  sessions: new Map(), // decoder URL -> Promise of {session, input, output}
  views: new WeakMap(), // parentElement -> View
  queue: Promise.resolve(), // runs one decode at a time (a session is not re-entrant)
});
const MAX_SESSIONS = 3; // decoders kept in memory: the active run's, and a few recent ones

// This module is a blob: URL, against which the server's paths do not resolve.
function onServer(path) {
  return new URL(path, window.location.origin).href;
}

function loadOrt(ortUrl, wasmUrl) {
  if (!STATE.ort) {
    const start = performance.now();
    const binary = fetchGunzipped(wasmUrl);
    STATE.ort = Promise.all([import(onServer(ortUrl)), binary]).then(([ort, wasm]) => {
      performance.measure("dogvae:runtime", { start, end: performance.now() });
      // More threads would need cross-origin isolation (COOP/COEP headers); one is
      // also steadier on a busy machine.
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      // The binary itself, so the bundle neither fetches it nor the loader it inlines.
      ort.env.wasm.wasmBinary = wasm;
      ort.env.logLevel = "error";
      return ort;
    });
    STATE.ort.catch(() => {
      STATE.ort = null; // a later render tries again
    });
  }
  return STATE.ort;
}

// A .gz file from the server, unpacked: the server sends it as it is.
async function fetchGunzipped(path) {
  const response = await fetch(onServer(path));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  if (typeof DecompressionStream !== "function") throw new Error("no DecompressionStream");
  const unpacked = response.body.pipeThrough(new DecompressionStream("gzip"));
  return new Response(unpacked).arrayBuffer();
}

function loadSession(ort, url) {
  let entry = STATE.sessions.get(url);
  if (!entry) {
    const start = performance.now();
    entry = fetchGunzipped(url)
      .then((bytes) =>
        ort.InferenceSession.create(new Uint8Array(bytes), {
          executionProviders: ["wasm"],
          graphOptimizationLevel: "all",
        }),
      )
      .then((session) => {
        performance.measure("dogvae:session", { start, end: performance.now() });
        return { session, input: session.inputNames[0], output: session.outputNames[0] };
      });
    STATE.sessions.set(url, entry);
    entry.catch(() => STATE.sessions.delete(url));
    while (STATE.sessions.size > MAX_SESSIONS) {
      const [oldest, old] = STATE.sessions.entries().next().value;
      STATE.sessions.delete(oldest);
      old.then((loaded) => loaded.session.release()).catch(() => {});
    }
  }
  return entry;
}

// One decode, timed: the image (H*W*C floats in [0, 1], NHWC) of the point z.
function decode(ort, loaded, z) {
  const run = STATE.queue.then(async () => {
    const input = new ort.Tensor("float32", z, [1, z.length]);
    const start = performance.now();
    const outputs = await loaded.session.run({ [loaded.input]: input });
    const end = performance.now();
    performance.measure("dogvae:decode", { start, end });
    const pixels = outputs[loaded.output].data;
    input.dispose?.();
    return pixels;
  });
  STATE.queue = run.catch(() => {});
  return run;
}

// A one-node ONNX graph (Identity): creating a session for it instantiates the runtime's
// WebAssembly, the slow part of the first decoder's session, before there is a decoder.
const WARM_UP_MODEL = "CAg6OgoQCgF4EgF5IghJZGVudGl0eRIEd2FybVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEBE=";

// Load the runtime (and a decoder's session) ahead of the canvas that will need it. Quiet
// on failure: the canvas itself reports why it cannot decode.
function preload(data) {
  if (typeof WebAssembly !== "object") return;
  STATE.warmed ??= loadOrt(data.ort_url, data.wasm_url).then(async (ort) => {
    const model = Uint8Array.from(atob(WARM_UP_MODEL), (char) => char.charCodeAt(0));
    const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
    await session.release();
    return ort;
  });
  STATE.warmed
    .then((ort) => (data.decoder ? loadSession(ort, data.decoder.url) : null))
    .catch(() => {
      STATE.warmed = null;
    });
}
