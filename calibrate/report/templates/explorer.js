/* calibrate cutoff explorer: self-contained, no network, no library.
 * Rule: fire when score >= T. Counts, rates, exact one-sided Clopper-Pearson upper
 * bounds, expected cost and limit status follow calibrate.thresholds.evaluate_threshold.
 * API: window.calibrateExplorer.ready (a Promise), .evaluate(label, version, threshold[, detector]).
 */
(function () {
  "use strict";
  var dataEl = document.getElementById("calibrate-explorer-data");
  var entries = dataEl ? JSON.parse(dataEl.textContent) : [];

  function num(x) {
    if (x === "+inf") return Infinity;
    if (x === "-inf") return -Infinity;
    return x;
  }

  // ---- log-gamma (Lanczos, g = 607/128, 15 terms; relative error ~1e-15) ----------
  var LG = [0.99999999999999709182, 57.156235665862923517, -59.597960355475491248,
    14.136097974741747174, -0.49191381609762019978, 0.33994649984811888699e-4,
    0.46523628927048575665e-4, -0.98374475304879564677e-4, 0.15808870322491248884e-3,
    -0.21026444172410488319e-3, 0.21743961811521264320e-3, -0.16431810653676389022e-3,
    0.84418223983852743293e-4, -0.26190838401581408670e-4, 0.36899182659531622704e-5];
  var LN_SQRT_2PI = 0.91893853320467274178;
  function lgamma(x) {
    if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lgamma(1 - x);
    x -= 1;
    var s = LG[0], t = x + 607 / 128 + 0.5;
    for (var i = 1; i < 15; i++) s += LG[i] / (x + i);
    return LN_SQRT_2PI + (x + 0.5) * Math.log(t) - t + Math.log(s);
  }

  // ---- regularized incomplete beta I_x(a, b): continued fraction (modified Lentz) ----
  function betacf(a, b, x) {
    var TINY = 1e-300, qab = a + b, qap = a + 1, qam = a - 1;
    var c = 1, d = 1 - qab * x / qap;
    if (Math.abs(d) < TINY) d = TINY;
    d = 1 / d;
    var h = d;
    for (var m = 1; m <= 100000; m++) {
      var m2 = 2 * m, aa = m * (b - m) * x / ((qam + m2) * (a + m2));
      d = 1 + aa * d; if (Math.abs(d) < TINY) d = TINY;
      c = 1 + aa / c; if (Math.abs(c) < TINY) c = TINY;
      d = 1 / d; h *= d * c;
      aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
      d = 1 + aa * d; if (Math.abs(d) < TINY) d = TINY;
      c = 1 + aa / c; if (Math.abs(c) < TINY) c = TINY;
      d = 1 / d;
      var del = d * c;
      h *= del;
      if (Math.abs(del - 1) < 1e-16) break;
    }
    return h;
  }
  function ibeta(x, a, b) {
    if (x <= 0) return 0;
    if (x >= 1) return 1;
    var lbt = lgamma(a + b) - lgamma(a) - lgamma(b) + a * Math.log(x) + b * Math.log1p(-x);
    if (x < (a + 1) / (a + b + 2)) return Math.exp(lbt) * betacf(a, b, x) / a;
    return 1 - Math.exp(lbt) * betacf(b, a, 1 - x) / b;
  }
  // beta quantile: bisection on I_x(a, b) = p down to adjacent doubles
  function betaQuantile(p, a, b) {
    var lo = 0, hi = 1;
    for (var i = 0; i < 2000; i++) {
      var mid = 0.5 * (lo + hi);
      if (mid <= lo || mid >= hi) break;
      if (ibeta(mid, a, b) < p) lo = mid; else hi = mid;
    }
    return 0.5 * (lo + hi);
  }
  // exact one-sided Clopper-Pearson upper bound (calibrate.stats.clopper_pearson_upper)
  function clopperUpper(k, n, conf) {
    if (n === 0 || k >= n) return 1;
    return betaQuantile(conf, k + 1, Math.max(n - k, 1));
  }

  // ---- deployable value: calibrate.export.rounding.shortest_safe ----------------------
  function floorTo(x, d) {
    var step = Math.pow(10, -d), k = Math.floor(x / step);
    for (var j = k + 1; j >= k - 2; j--) {
      var cand = Number((j * step).toFixed(d));
      if (cand <= x) return cand;
    }
    return Number(((k - 2) * step).toFixed(d));
  }
  function shortestSafe(t, below) {
    if (!isFinite(t)) return t;
    for (var d = 4; d <= 15; d++) {
      var v = floorTo(t, d);
      if (below < v) return v;
    }
    return t;
  }

  // ---- tables -------------------------------------------------------------------------
  function inflate(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }
  function unplane(src, offset, n, size) {
    var out = new Uint8Array(n * size);
    for (var j = 0; j < size; j++) {
      var base = offset + j * n;
      for (var i = 0; i < n; i++) out[i * size + j] = src[base + i];
    }
    return out.buffer;  // little-endian, as written
  }
  function load(e) {
    return inflate(e.table).then(function (buf) {
      var u8 = new Uint8Array(buf), n = e.n;
      var scores = new Float64Array(unplane(u8, 0, n, 8));
      var pos = new Uint32Array(unplane(u8, 8 * n, n, 4));
      var neg = new Uint32Array(unplane(u8, 12 * n, n, 4));
      var cumPos = new Float64Array(n + 1), cumNeg = new Float64Array(n + 1);
      for (var i = 0; i < n; i++) {
        cumPos[i + 1] = cumPos[i] + pos[i];
        cumNeg[i + 1] = cumNeg[i] + neg[i];
      }
      e.scores = scores; e.cumPos = cumPos; e.cumNeg = cumNeg;
    });
  }
  // first index with scores[i] >= t (scores ascending)
  function lowerBound(s, t) {
    var lo = 0, hi = s.length;
    while (lo < hi) { var mid = (lo + hi) >>> 1; if (s[mid] < t) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function evaluateEntry(e, t) {
    t = num(t);
    if (typeof t !== "number" || isNaN(t)) throw new Error("threshold must be a number");
    var p = e.policy, nPos = e.n_positive, nNeg = e.n_negative;
    var idx = lowerBound(e.scores, t);
    var fn = e.cumPos[idx], fp = nNeg - e.cumNeg[idx];  // positives below T, negatives at or above
    var reject = p.action === "reject";
    var fa = reject ? fn : fp, fr = reject ? fp : fn;
    var nFa = reject ? nPos : nNeg, nFr = reject ? nNeg : nPos;
    var pi = p.prevalence === null ? nPos / (nPos + nNeg) : p.prevalence;
    var cMiss = reject ? p.cost_false_accept : p.cost_false_reject;
    var cAlarm = reject ? p.cost_false_reject : p.cost_false_accept;
    var wMiss = cMiss * pi / nPos, wAlarm = cAlarm * (1.0 - pi) / nNeg;
    return {
      false_accepts: fa, false_rejects: fr, n_positive: nPos, n_negative: nNeg,
      false_accept_rate: fa / nFa, false_reject_rate: fr / nFr,
      false_accept_upper: clopperUpper(fa, nFa, p.confidence),
      false_reject_upper: clopperUpper(fr, nFr, p.confidence),
      expected_cost: wMiss * fn + wAlarm * fp,
      n_false_accept: nFa, n_false_reject: nFr, index: idx
    };
  }
  function limitStatus(e, r) {
    var p = e.policy, out = [];
    [["false accept", p.max_false_accept_rate, r.false_accepts, r.n_false_accept],
     ["false reject", p.max_false_reject_rate, r.false_rejects, r.n_false_reject]
    ].forEach(function (x) {
      if (x[1] === null || x[1] === undefined) return;
      var up = clopperUpper(x[2], x[3], p.limit_confidence);
      out.push({ name: x[0], limit: x[1], upper: up, met: up <= x[1] });
    });
    return out;
  }

  var ready = false;
  function find(label, version, detector) {
    var hits = entries.filter(function (e) {
      return e.label === label && e.version === version &&
        (detector === undefined || e.detector === detector);
    });
    if (hits.length !== 1) {
      throw new Error((hits.length ? "several detectors have " : "no calibrated ") +
        "label " + JSON.stringify(label) + " version " + JSON.stringify(version) +
        (hits.length ? ": pass the detector" : ""));
    }
    return hits[0];
  }
  function evaluate(label, version, threshold, detector) {
    if (!ready) throw new Error("explorer tables not decoded yet: await calibrateExplorer.ready");
    var r = evaluateEntry(find(label, version, detector), threshold);
    return {
      false_accepts: r.false_accepts, false_rejects: r.false_rejects,
      n_positive: r.n_positive, n_negative: r.n_negative,
      false_accept_rate: r.false_accept_rate, false_reject_rate: r.false_reject_rate,
      false_accept_upper: r.false_accept_upper, false_reject_upper: r.false_reject_upper,
      expected_cost: r.expected_cost
    };
  }

  // ---- the page ----------------------------------------------------------------------
  function pct(x) { return (100 * x).toPrecision(3).replace(/\.?0+$/, "") + "%"; }
  function thr(t) {
    if (t === Infinity) return "never fire";
    if (t === -Infinity) return "always fire";
    return String(t);
  }
  function thresholdAt(e, pos) { return pos >= e.n ? Infinity : e.scores[pos]; }

  function show(e, root, pos) {
    var t = thresholdAt(e, pos), r = evaluateEntry(e, t);
    var below = pos > 0 ? e.scores[Math.min(pos, e.n) - 1] : -Infinity;
    var dep = pos >= e.n ? "never fire (leave the label out)" :
      (t === -Infinity ? "always fire (also on images with no result)" : String(shortestSafe(t, below)));
    var set = function (field, text) {
      var el = root.querySelector('[data-field="' + field + '"]');
      if (el) el.textContent = text;
    };
    set("threshold", thr(t));
    set("deployable", dep);
    set("false_accepts", r.false_accepts.toLocaleString("en-US"));
    set("n_false_accept", r.n_false_accept.toLocaleString("en-US"));
    set("false_accept_rate", pct(r.false_accept_rate));
    set("false_accept_upper", pct(r.false_accept_upper));
    set("false_rejects", r.false_rejects.toLocaleString("en-US"));
    set("n_false_reject", r.n_false_reject.toLocaleString("en-US"));
    set("false_reject_rate", pct(r.false_reject_rate));
    set("false_reject_upper", pct(r.false_reject_upper));
    set("expected_cost", r.expected_cost.toPrecision(4));
    var lim = limitStatus(e, r), el = root.querySelector('[data-field="limits"]');
    if (el) {
      el.textContent = "";
      if (!lim.length) el.textContent = "none set";
      lim.forEach(function (l, i) {
        var span = document.createElement("span");
        span.className = l.met ? "met" : "notmet";
        span.textContent = (i ? "; " : "") + l.name + " \u2264 " + pct(l.limit) + ": " +
          (l.met ? "met" : "not met") + " (upper " + pct(l.upper) + " at " +
          (100 * e.policy.limit_confidence).toPrecision(3).replace(/\.?0+$/, "") + "%)";
        el.appendChild(span);
      });
    }
    var here = [];
    e.marks.forEach(function (m) { if (lowerBound(e.scores, num(m.threshold)) === pos) here.push(m.name.replace("_", "-")); });
    if (e.exported !== null && lowerBound(e.scores, num(e.exported)) === pos) here.push("exported");
    set("here", here.length ? "(" + here.join(", ") + ")" : "");
  }

  function setup(e) {
    var root = document.querySelector('[data-explorer="' + e.id + '"]');
    if (!root) return;
    var slider = root.querySelector("input[type=range]");
    var marks = root.querySelector(".explorer-marks");
    var go = function (pos) { slider.value = String(pos); show(e, root, pos); };
    var addMark = function (name, t, title) {
      var pos = lowerBound(e.scores, num(t));
      var tick = document.createElement("span");
      tick.className = "explorer-tick explorer-" + name;
      tick.style.left = (100 * pos / Math.max(e.n, 1)) + "%";
      tick.title = title;
      marks.appendChild(tick);
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = name.replace("_", "-") + ": " + thr(num(t));
      b.title = title;
      b.addEventListener("click", function () { go(pos); });
      root.querySelector(".explorer-jumps").appendChild(b);
    };
    e.marks.forEach(function (m) { addMark(m.name, m.threshold, m.text); });
    if (e.exported !== null) addMark("exported", e.exported, "the value the exporters write");
    var copy = root.querySelector("button.explorer-copy");
    if (copy) copy.addEventListener("click", function () {
      var text = root.querySelector('[data-field="deployable"]').textContent;
      if (navigator.clipboard) navigator.clipboard.writeText(text).catch(function () {});
    });
    slider.addEventListener("input", function () { show(e, root, Number(slider.value)); });
    go(lowerBound(e.scores, num(e.chosen)));
  }

  var readyPromise = (typeof DecompressionStream === "undefined")
    ? Promise.reject(new Error("this browser cannot inflate the embedded tables (no DecompressionStream)"))
    : Promise.all(entries.map(load)).then(function () {
      ready = true;
      entries.forEach(setup);
      return true;
    });
  readyPromise.catch(function (err) {
    document.querySelectorAll(".explorer-status").forEach(function (el) {
      el.textContent = "The explorer cannot run here: " + err.message;
    });
  });
  window.calibrateExplorer = {
    ready: readyPromise,
    evaluate: evaluate,
    betaQuantile: betaQuantile,
    entries: entries.map(function (e) {
      return { label: e.label, version: e.version, detector: e.detector, n: e.n };
    })
  };
})();
