// Runs in the page that tests/browser_cors.rs serves on its own origin. `window.DEPOT_TEST`
// (from /config.js) says where Depot is and what to upload:
//   { endpoint, token, product, version, filename, size, seed, chunkSize }
// The Blob's bytes are xorshift32(seed), the same generator as the test's Rust side.
// The result goes into the DOM and is POSTed back to the page's own origin at /result:
//   { ok, stage, url, error, size, sha256, patches, offsets, download_sha256, download_size }
"use strict";

(function () {
  const cfg = window.DEPOT_TEST;
  const result = { ok: false, stage: "start", patches: 0, offsets: [] };

  function report() {
    const text = JSON.stringify(result);
    document.getElementById("result").textContent = text;
    document.title = result.ok ? "ok" : "failed";
    // Same origin as the page: no CORS involved in reporting.
    fetch("/result", { method: "POST", headers: { "Content-Type": "application/json" }, body: text })
      .catch(function () {});
  }

  function bytes(len, seed) {
    const out = new Uint8Array(len);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < len; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x >>> 24;
    }
    return out;
  }

  async function sha256(buffer) {
    const digest = await crypto.subtle.digest("SHA-256", buffer);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function download() {
    result.stage = "download";
    const path = "/product/download/" + encodeURIComponent(cfg.product) + "/" + encodeURIComponent(cfg.version);
    const response = await fetch(new URL(path, cfg.endpoint).href, {
      headers: { "X-Api-Token": cfg.token },
      cache: "no-store",
    });
    if (!response.ok) {
      throw new Error("download answered " + response.status + ": " + (await response.text()));
    }
    const body = await response.arrayBuffer();
    result.download_size = body.byteLength;
    result.download_sha256 = await sha256(body);
  }

  async function main() {
    if (!cfg || typeof tus === "undefined" || !tus.isSupported) {
      throw new Error("tus-js-client or the config did not load");
    }
    const data = bytes(cfg.size, cfg.seed);
    result.size = data.length;
    result.sha256 = await sha256(data);
    const blob = new Blob([data], { type: "application/octet-stream" });
    result.stage = "upload";
    let upload;
    await new Promise(function (resolve, reject) {
      upload = new tus.Upload(blob, {
        endpoint: cfg.endpoint,
        chunkSize: cfg.chunkSize,
        // No retries: a failure (a CORS refusal above all) is reported at once, never
        // hidden by a later success.
        retryDelays: null,
        storeFingerprintForResuming: false,
        headers: { "X-Api-Token": cfg.token },
        metadata: { product: cfg.product, version: cfg.version, filename: cfg.filename },
        onAfterResponse: function (req, res) {
          // The offsets Depot reported, read through CORS (exposed headers only).
          if (req.getMethod() === "PATCH") {
            result.offsets.push(res.getHeader("Upload-Offset"));
          }
        },
        onChunkComplete: function () {
          result.patches += 1;
        },
        onError: reject,
        onSuccess: resolve,
      });
      upload.start();
    });
    result.url = upload.url;
    await download();
    result.stage = "done";
    result.ok = true;
  }

  main()
    .catch(function (error) {
      result.error = String((error && error.message) || error);
    })
    .finally(report);
})();
