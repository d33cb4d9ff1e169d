// The import form of the account pages: the file is sent as the raw body of
// POST api/import (XMLHttpRequest, for its upload progress events), then the import's
// progress is polled from api/import/<id> until it is done or failed.
// A plain ES module, no dependencies; the page has no inline script (CSP script-src 'self').

const form = document.getElementById("import-form");
const box = document.getElementById("import-progress");
const phase = document.getElementById("import-phase");
const bar = document.getElementById("import-bar");
const percent = document.getElementById("import-percent");
const out = document.getElementById("import-result");

function show(name, value) {
  phase.textContent = name;
  bar.value = value;
  percent.textContent = `${value}%`;
}

function upload(file, url, csrf) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) show("Uploading", Math.floor((100 * e.loaded) / e.total));
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = { error: xhr.statusText }; }
      if (xhr.status === 200) resolve(body); else reject(new Error(body.error || `HTTP ${xhr.status}`));
    });
    xhr.addEventListener("error", () => reject(new Error("the upload failed (connection lost, or too large)")));
    xhr.send(file);
  });
}

async function poll(url) {
  for (;;) {
    const r = await fetch(url, { credentials: "same-origin" });
    const s = await r.json();
    if (!r.ok) throw new Error(s.error || `HTTP ${r.status}`);
    const name = { unpacking: "Unpacking", counting: "Counting", importing: "Importing", done: "Imported", failed: "Failed" }[s.state] || s.state;
    show(name, s.percent);
    if (s.state === "done") return s;
    if (s.state === "failed") throw new Error(s.error);
    await new Promise((res) => setTimeout(res, 500));
  }
}

form?.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = form.elements.file.files[0];
  if (!file) return;
  const max = Number(form.dataset.max);
  box.hidden = false;
  out.className = "";
  out.textContent = "";
  if (file.size > max) {
    out.className = "error";
    out.textContent = `The file is larger than ${max} bytes.`;
    return;
  }
  const params = new URLSearchParams({ mailbox: form.elements.mailbox.value });
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    show("Uploading", 0);
    const { id } = await upload(file, `${form.dataset.api}?${params}`, form.dataset.csrf);
    const s = await poll(`${form.dataset.api}/${encodeURIComponent(id)}`);
    out.className = "ok";
    out.id = "import-result";
    out.textContent = `Imported ${s.imported} of ${s.total} messages` +
      (s.duplicates ? `, ${s.duplicates} with a Message-ID seen before` : "") +
      (s.too_large ? `, ${s.too_large} too large` : "") + ".";
  } catch (e) {
    out.className = "error";
    out.textContent = `Import failed: ${e.message}`;
  } finally {
    button.disabled = false;
  }
});
