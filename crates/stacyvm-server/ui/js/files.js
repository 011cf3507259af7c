// A sandbox's files: browse directories, download a file, upload files into the directory.

import { api, enc, get } from "./api.js";
import { busy, field, fmtBytes, h, notice, replace, showError, when } from "./dom.js";

function join(dir, name) {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function parent(dir) {
  if (dir === "/" || dir === "") return "/";
  const cut = dir.replace(/\/+$/, "").lastIndexOf("/");
  return cut <= 0 ? "/" : dir.slice(0, cut);
}

function basename(path) {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1) || trimmed;
}

/** Mounts the file browser for `sandboxId` in `slot`, starting at /workspace. */
export function mountFiles(slot, sandboxId, startDir = "/workspace") {
  let dir = startDir;
  const pathInput = h("input", { type: "text", name: "path", value: dir, spellcheck: "false" });
  const goBtn = h("button", { type: "submit" }, "Open");
  const upBtn = h("button", { type: "button" }, "Up");
  const fileInput = h("input", { type: "file", name: "upload", multiple: true });
  const uploadBtn = h("button", { type: "button" }, "Upload");
  const tbody = h("tbody");
  const nav = h("form", { class: "row", "aria-label": "Directory" },
    field("Directory", pathInput), h("div", { class: "field end" }, goBtn), h("div", { class: "field end" }, upBtn));
  const upload = h("div", { class: "row" },
    field("Files to upload into this directory", fileInput), h("div", { class: "field end" }, uploadBtn));
  replace(slot, nav, h("div", { class: "scroll" }, h("table", { class: "list", "aria-label": "Files" },
    h("thead", {}, h("tr", {}, ["Name", "Size", "Mode", "Modified", ""].map((c) => h("th", { scope: "col" }, c)))),
    tbody)), upload);

  async function load(to, fallback) {
    try {
      const entries = await get(`/sandboxes/${enc(sandboxId)}/files/list?path=${enc(to)}`);
      dir = to;
      pathInput.value = dir;
      entries.sort((a, b) => (a.is_dir === b.is_dir ? a.path.localeCompare(b.path) : a.is_dir ? -1 : 1));
      const rows = entries.map((f) => {
        const name = basename(f.path);
        const full = f.path.startsWith("/") ? f.path : join(dir, name);
        const link = f.is_dir
          ? h("button", { type: "button", class: "link", onclick: () => load(full) }, `${name}/`)
          : h("span", { class: "mono" }, name);
        const dl = f.is_dir ? "" : h("button", {
          type: "button",
          "aria-label": `Download ${name}`,
          onclick: (e) => busy(e.currentTarget, () => download(full, name)),
        }, "Download");
        return h("tr", {}, h("td", {}, link), h("td", {}, f.is_dir ? "" : fmtBytes(f.size)),
          h("td", { class: "mono" }, f.mode), h("td", {}, when(f.mod_time)), h("td", {}, dl));
      });
      replace(tbody, rows.length ? rows : h("tr", {}, h("td", { colspan: "5", class: "empty" }, "Empty directory.")));
    } catch (e) {
      if (fallback && e.status === 404) load(fallback);
      else showError(e);
    }
  }

  async function download(path, name) {
    const resp = await api("GET", `/sandboxes/${enc(sandboxId)}/files?path=${enc(path)}`, { raw: true });
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  nav.addEventListener("submit", (e) => {
    e.preventDefault();
    load(pathInput.value.trim() || "/");
  });
  upBtn.addEventListener("click", () => load(parent(dir)));
  uploadBtn.addEventListener("click", (e) => busy(e.currentTarget, async () => {
    const files = [...fileInput.files];
    if (!files.length) {
      showError("choose a file first");
      return;
    }
    for (const f of files) {
      // PUT streams the raw bytes (any size, binary-safe; docs/files.md).
      await api("PUT", `/sandboxes/${enc(sandboxId)}/files?path=${enc(join(dir, f.name))}`,
        { body: f, contentType: "application/octet-stream" });
    }
    notice(`uploaded ${files.length} file${files.length === 1 ? "" : "s"} to ${dir}`);
    fileInput.value = "";
    await load(dir);
  }));

  load(dir, "/");
}
