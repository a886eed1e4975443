// dogvae's latent canvas, part 2 of 2 (after runtime.js): draws decoded latent points on a
// canvas, following sliders, a 2-D pad or an animation.
//
// Timings, for any script to read: "dogvae:frame" from an input event to its pixels, and
// the mark "dogvae:first-draw" (a canvas shows its first decoded image).

// Values go to Python this long after the last release, so that a run of key presses
// (each a release) costs one rerun, not one per step.
const REPORT_DELAY_MS = 250;

function numbers(values) {
  return Array.from(values ?? [], Number);
}

class View {
  constructor(root) {
    this.root = root;
    this.data = null;
    this.values = [];
    this.frame = 0;
    this.signature = "";
    this.controlsSignature = "";
    this.pending = null; // {event} of the latest request not yet drawn
    this.running = false;
    this.drawnKey = ""; // decoder URL and point of the pixels on the canvas
    this.playing = false;
    this.build();
  }

  build() {
    const wrapper = document.createElement("div");
    wrapper.className = "dogvae-latent-canvas";
    wrapper.innerHTML = `
      <div class="picture">
        <img class="fallback" alt="decoded image">
        <canvas data-dogvae-canvas data-status="loading" hidden></canvas>
      </div>
      <div class="controls"></div>`;
    this.root.appendChild(wrapper);
    this.wrapper = wrapper;
    this.img = wrapper.querySelector("img");
    this.canvas = wrapper.querySelector("canvas");
    this.controls = wrapper.querySelector(".controls");
    this.context = this.canvas.getContext("2d");
  }

  // A render with (possibly) new data from Python.
  update(component) {
    const data = component.data;
    this.setStateValue = component.setStateValue;
    this.data = data;
    const size = data.image_size;
    if (this.canvas.width !== size) {
      this.canvas.width = size;
      this.canvas.height = size;
      this.imageData = this.context.createImageData(size, size);
    }
    for (const element of [this.img, this.canvas]) {
      element.style.width = `${data.width}px`;
      element.style.height = `${data.width}px`;
    }
    if (data.fallback && this.canvas.hidden) this.img.src = data.fallback;
    this.img.hidden = !this.canvas.hidden;

    // Python's values are taken on the first render and when the page says so (a new
    // revision: Reset, Random point, a photo) or changes the space itself; otherwise the
    // user's moves stay, whatever values the page echoes back.
    const signature = JSON.stringify([
      data.decoder.url, data.origin, data.directions, data.scales, data.revision, data.frames,
    ]);
    if (signature !== this.signature) {
      this.signature = signature;
      clearTimeout(this.reportTimer); // the page's values win over a move not yet reported
      this.values = numbers(data.values);
      this.frame = 0;
      this.autoplayed = false;
    }
    this.buildControls();
    this.syncControls();
    this.request(null);
    if (data.frames && data.autoplay && !this.playing && !this.autoplayed) {
      this.autoplayed = true;
      this.play();
    }
  }

  // The latent point shown: a frame, or origin + sum(value_i * scale_i * direction_i),
  // summed in double precision as dogvae.latent.SliderBasis.to_point does.
  point() {
    const data = this.data;
    if (data.frames) return Float32Array.from(data.frames[this.frame]);
    const z = numbers(data.origin);
    const directions = data.directions ?? [];
    directions.forEach((direction, index) => {
      const weight = (this.values[index] ?? 0) * (data.scales?.[index] ?? 1);
      for (let dim = 0; dim < z.length; dim += 1) z[dim] += weight * direction[dim];
    });
    return Float32Array.from(z);
  }

  // Redraw for ``event`` (an input event, or null for a redraw of new data); requests
  // that arrive while a decode runs collapse into one, the latest.
  request(event) {
    this.pending = { event };
    if (!this.running) this.pump();
  }

  async pump() {
    this.running = true;
    try {
      if (typeof WebAssembly !== "object") throw new Error("this browser has no WebAssembly");
      const ort = await loadOrt(this.data.ort_url, this.data.wasm_url);
      while (this.pending) {
        const { event } = this.pending;
        this.pending = null;
        const data = this.data; // one render's data for the whole of this frame
        const loaded = await loadSession(ort, data.decoder.url);
        const z = this.point();
        const key = `${data.decoder.url} ${z.join(",")}`;
        if (!event && key === this.drawnKey) continue; // a rerun that changed nothing here
        const shown = data.frames ? `frame ${this.frame}` : JSON.stringify(this.values);
        const pixels = await decode(ort, loaded, z);
        if (!this.draw(data, pixels, shown)) continue;
        this.drawnKey = key;
        if (event) {
          performance.measure("dogvae:frame", { start: event.timeStamp, end: performance.now() });
        }
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.running = false;
    }
  }

  // Draw ``pixels`` (of ``data``'s decoder; false if the canvas has changed size since);
  // ``shown`` names their point for tests and scripts (data-point).
  draw(data, pixels, shown) {
    const { image_size: size, channels } = data;
    if (this.imageData.width !== size) return false;
    const rgba = this.imageData.data;
    // Math.fround: the product in float32, as NumPy's float32 array * 255 is; the
    // Uint8ClampedArray then rounds half to even and clips, as np.rint and np.clip do.
    for (let index = 0, count = size * size; index < count; index += 1) {
      const at = index * 4;
      if (channels === 1) {
        const level = Math.fround(pixels[index] * 255);
        rgba[at] = level;
        rgba[at + 1] = level;
        rgba[at + 2] = level;
      } else {
        rgba[at] = Math.fround(pixels[index * 3] * 255);
        rgba[at + 1] = Math.fround(pixels[index * 3 + 1] * 255);
        rgba[at + 2] = Math.fround(pixels[index * 3 + 2] * 255);
      }
      rgba[at + 3] = 255;
    }
    this.context.putImageData(this.imageData, 0, 0);
    if (this.canvas.hidden) {
      this.canvas.hidden = false;
      this.img.hidden = true;
      performance.mark("dogvae:first-draw");
    }
    this.canvas.dataset.status = "ready";
    this.canvas.dataset.decodes = String(Number(this.canvas.dataset.decodes ?? 0) + 1);
    this.canvas.dataset.point = shown;
    return true;
  }

  fail(error) {
    const reason = String(error?.message ?? error);
    this.canvas.dataset.status = "unavailable";
    this.stop();
    // The server image stays; the page switches to its server path on the rerun.
    if (!this.reported) {
      this.reported = true;
      console.warn(`dogvae: decoding in the browser is unavailable: ${reason}`);
      this.setStateValue("unavailable", reason);
    }
  }

  // Report the values after a release, with the revision of the page's values they were
  // moved from: a report still on its way when the page sets values of its own (Reset
  // clicked right after a key press) is then recognised as older and dropped.
  report() {
    clearTimeout(this.reportTimer);
    const revision = this.data.revision;
    const send = () => this.setStateValue("report", { values: this.values.slice(), revision });
    this.reportTimer = setTimeout(send, REPORT_DELAY_MS);
  }

  buildControls() {
    const data = this.data;
    const signature = JSON.stringify([
      data.labels, data.range, data.step, data.pad, data.sliders, data.frames?.length,
    ]);
    if (signature === this.controlsSignature) return;
    this.controlsSignature = signature;
    this.controls.replaceChildren();
    this.sliders = [];
    this.padDot = null;
    if (data.frames) {
      this.buildPlayer();
      return;
    }
    if (data.pad) this.buildPad();
    if (data.sliders) {
      (data.labels ?? []).forEach((label, index) => this.buildSlider(label, index));
    }
  }

  buildSlider(label, index) {
    const [low, high] = this.data.range;
    const row = document.createElement("label");
    row.className = "slider";
    row.innerHTML = `<span class="name"></span><input type="range"><output></output>`;
    row.querySelector(".name").textContent = label;
    const input = row.querySelector("input");
    Object.assign(input, { min: low, max: high, step: this.data.step });
    input.setAttribute("aria-label", label);
    input.addEventListener("input", (event) => {
      clearTimeout(this.reportTimer);
      this.values[index] = Number(input.value);
      this.syncControls();
      this.request(event);
    });
    input.addEventListener("change", () => this.report());
    this.controls.appendChild(row);
    this.sliders.push(input);
  }

  buildPad() {
    const [first, second] = this.data.pad;
    const pad = document.createElement("div");
    pad.className = "pad";
    pad.setAttribute("role", "application");
    const labels = this.data.labels ?? [];
    pad.setAttribute("aria-label", `${labels[first]} and ${labels[second]}`);
    pad.innerHTML = `<div class="dot"></div>`;
    this.padDot = pad.querySelector(".dot");
    const [low, high] = this.data.range;
    const move = (event) => {
      clearTimeout(this.reportTimer);
      const box = pad.getBoundingClientRect();
      const x = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
      const y = Math.min(Math.max((event.clientY - box.top) / box.height, 0), 1);
      this.values[first] = low + x * (high - low);
      this.values[second] = high - y * (high - low); // up is +
      this.syncControls();
      this.request(event);
    };
    pad.addEventListener("pointerdown", (event) => {
      pad.setPointerCapture(event.pointerId);
      move(event);
    });
    pad.addEventListener("pointermove", (event) => {
      if (pad.hasPointerCapture(event.pointerId)) move(event);
    });
    pad.addEventListener("pointerup", () => this.report());
    this.controls.appendChild(pad);
  }

  buildPlayer() {
    const player = document.createElement("div");
    player.className = "player";
    player.innerHTML = `
      <button type="button"></button><input type="range" aria-label="Frame"><output></output>`;
    this.playButton = player.querySelector("button");
    this.scrub = player.querySelector("input");
    Object.assign(this.scrub, { min: 0, max: this.data.frames.length - 1, step: 1 });
    this.playButton.addEventListener("click", () => (this.playing ? this.stop() : this.play()));
    this.scrub.addEventListener("input", (event) => {
      this.frame = Number(this.scrub.value);
      this.stop(); // and syncs the controls to the frame
      this.request(event);
    });
    this.controls.appendChild(player);
  }

  play() {
    if (!this.data.frames) return;
    this.playing = true;
    const interval = 1000 / (this.data.fps || 8);
    let last = performance.now();
    const tick = (now) => {
      if (!this.playing) return;
      if (now - last >= interval && !this.running) {
        last = now;
        this.frame = (this.frame + 1) % this.data.frames.length;
        this.syncControls();
        this.request(null);
      }
      this.animation = requestAnimationFrame(tick);
    };
    this.animation = requestAnimationFrame(tick);
    this.syncControls();
  }

  stop() {
    clearTimeout(this.reportTimer);
    this.playing = false;
    if (this.animation) cancelAnimationFrame(this.animation);
    this.syncControls();
  }

  syncControls() {
    const data = this.data;
    if (!data) return;
    if (data.frames && this.scrub) {
      this.scrub.value = String(this.frame);
      this.scrub.nextElementSibling.textContent = `${this.frame + 1} / ${data.frames.length}`;
      this.playButton.textContent = this.playing ? "Pause" : "Play";
      return;
    }
    this.sliders.forEach((input, index) => {
      const value = this.values[index] ?? 0;
      if (Number(input.value) !== value) input.value = String(value);
      input.nextElementSibling.textContent = value.toFixed(2);
    });
    if (this.padDot) {
      const [low, high] = data.range;
      const [first, second] = data.pad;
      const x = ((this.values[first] ?? 0) - low) / (high - low);
      const y = (high - (this.values[second] ?? 0)) / (high - low);
      this.padDot.style.left = `${Math.min(Math.max(x, 0), 1) * 100}%`;
      this.padDot.style.top = `${Math.min(Math.max(y, 0), 1) * 100}%`;
    }
  }
}

export default function render(component) {
  if (component.data?.preload) {
    preload(component.data);
    return () => {};
  }
  const { parentElement } = component;
  let view = STATE.views.get(parentElement);
  if (!view) {
    view = new View(parentElement);
    STATE.views.set(parentElement, view);
  }
  view.update(component);
  return () => {
    view.stop();
    view.wrapper.remove();
    STATE.views.delete(parentElement);
  };
}
