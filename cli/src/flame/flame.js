"use strict";
// forkprof flame graph: click a frame to zoom into it, "Reset Zoom" (or Escape) to go back,
// "Search" (or Ctrl+F) to highlight frames matching a regular expression and see their share.
// The page's query or fragment may ask for both at load: ?s=REGEX&z=FUNCTION.
// `fg_config` (layout constants) is written by forkprof just after this script.

var fg = { frames: [], zoomed: null, searching: null };

function fg_frame_of(node) {
  // The frame's <g> is a direct child of #frames.
  while (node && node.parentNode && node.parentNode.id !== "frames") {
    node = node.parentNode;
  }
  return node && node.fg_index !== undefined ? fg.frames[node.fg_index] : null;
}

function init(evt) {
  fg.details = document.getElementById("details");
  fg.matched = document.getElementById("matched");
  fg.searchButton = document.getElementById("search");
  fg.unzoomButton = document.getElementById("unzoom");
  var list = document.getElementById("frames");
  var gs = list.children;
  for (var i = 0; i < gs.length; i++) {
    var g = gs[i];
    var rect = g.getElementsByTagName("rect")[0];
    var text = g.getElementsByTagName("text")[0];
    var info = g.getElementsByTagName("title")[0].textContent;
    var nl = info.indexOf("\n");
    var y = parseFloat(rect.getAttribute("y"));
    g.fg_index = i;
    fg.frames.push({
      g: g, rect: rect, text: text, info: info,
      name: nl < 0 ? info : info.slice(0, nl),
      x: parseFloat(rect.getAttribute("x")),
      w: parseFloat(rect.getAttribute("width")),
      depth: Math.round((fg_config.bottom - y) / fg_config.frameHeight) - 1,
      fill: rect.getAttribute("fill")
    });
  }
  list.addEventListener("click", function (e) {
    var f = fg_frame_of(e.target);
    if (f) { zoom(f); }
  });
  list.addEventListener("mouseover", function (e) {
    var f = fg_frame_of(e.target);
    if (f) { fg.details.textContent = f.info.replace("\n", ": "); }
  });
  list.addEventListener("mouseout", function () { fg.details.textContent = " "; });
  fg.unzoomButton.addEventListener("click", unzoom);
  fg.searchButton.addEventListener("click", function () {
    if (fg.searching) { reset_search(); } else { search(); }
  });
  window.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && (e.key === "f" || e.key === "F")) {
      e.preventDefault();
      search();
    } else if (e.key === "Escape") {
      if (fg.searching) { reset_search(); } else { unzoom(); }
    }
  });
  var params = new URLSearchParams(window.location.search || window.location.hash.slice(1));
  if (params.get("z")) {
    var best = null;
    fg.frames.forEach(function (f) {
      if (f.name === params.get("z") && (!best || f.w > best.w)) { best = f; }
    });
    if (best) { zoom(best); }
  }
  if (params.get("s")) { search(params.get("s")); }
  document.documentElement.setAttribute("data-fg-ready", String(fg.frames.length));
}

function fit_label(f, w) {
  var fits = Math.floor((w - 6) / fg_config.charWidth);
  if (fits < 3) { return ""; }
  if (f.name.length <= fits) { return f.name; }
  return f.name.slice(0, fits - 2) + "..";
}

function place(f, x, w) {
  f.rect.setAttribute("x", x.toFixed(2));
  f.rect.setAttribute("width", w.toFixed(2));
  f.text.setAttribute("x", (x + 3).toFixed(2));
  f.text.textContent = fit_label(f, w);
}

function zoom(target) {
  var eps = 0.015;
  var full = fg_config.width - 2 * fg_config.pad;
  var scale = full / target.w;
  fg.frames.forEach(function (f) {
    var inside = f.x >= target.x - eps && f.x + f.w <= target.x + target.w + eps;
    var covers = f.x <= target.x + eps && f.x + f.w >= target.x + target.w - eps;
    f.g.classList.remove("hide", "parent");
    if (f.depth >= target.depth && inside) {
      place(f, fg_config.pad + (f.x - target.x) * scale, f.w * scale);
    } else if (f.depth < target.depth && covers) {
      f.g.classList.add("parent");
      place(f, fg_config.pad, full);
    } else {
      f.g.classList.add("hide");
    }
  });
  fg.zoomed = target;
  fg.unzoomButton.classList.remove("hide");
}

function unzoom() {
  fg.frames.forEach(function (f) {
    f.g.classList.remove("hide", "parent");
    place(f, f.x, f.w);
  });
  fg.zoomed = null;
  fg.unzoomButton.classList.add("hide");
}

function search(term) {
  if (term === undefined) {
    term = window.prompt("Search for (a regular expression):", "");
    if (term === null) { return; }
  }
  if (term === "") { reset_search(); return; }
  var re;
  try {
    re = new RegExp(term);
  } catch (e) {
    fg.matched.textContent = "not a regular expression: " + term;
    return;
  }
  var hits = [];
  fg.frames.forEach(function (f) {
    if (re.test(f.name)) {
      f.rect.setAttribute("fill", "rgb(230,0,230)");
      hits.push(f);
    } else {
      f.rect.setAttribute("fill", f.fill);
    }
  });
  // The share of the total with a match anywhere on the stack: the union of the matching
  // frames' spans, so a match nested in another match counts once.
  hits.sort(function (a, b) { return a.x - b.x; });
  var covered = 0, end = -Infinity;
  hits.forEach(function (h) {
    if (h.x >= end) {
      covered += h.w;
      end = h.x + h.w;
    } else if (h.x + h.w > end) {
      covered += h.x + h.w - end;
      end = h.x + h.w;
    }
  });
  var share = covered * 100 / (fg_config.width - 2 * fg_config.pad);
  fg.matched.textContent = "Matched: " + share.toFixed(1) + "% (" + hits.length + " frames)";
  fg.searching = re;
  fg.searchButton.textContent = "Reset Search";
}

function reset_search() {
  fg.frames.forEach(function (f) { f.rect.setAttribute("fill", f.fill); });
  fg.matched.textContent = " ";
  fg.searching = null;
  fg.searchButton.textContent = "Search";
}
