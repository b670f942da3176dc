// Live view: asks the console for a play URL of the device, then plays it
// with hls.js (HLS) or mpegts.js (FLV), both served from /console/static/vendor.
"use strict";
(function () {
  const box = document.querySelector(".player");
  const video = document.getElementById("video");
  const state = document.getElementById("state");
  let player = null;
  // hls.js in low-latency mode: it follows the playlist's PART-HOLD-BACK (1 s), loads parts
  // with blocking playlist reloads, and speeds up a little (up to 1.5x) to catch up when behind.
  // tests/test_console_browser.py measures first-frame time with this very line.
  const HLS_CONFIG = { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 10 };

  function say(text) { state.textContent = text; }

  function stop() {
    if (player) { player.destroy(); player = null; }
    video.removeAttribute("src");
    video.load();
  }

  async function playUrl(scheme) {
    const res = await fetch("/console/api/live/" + encodeURIComponent(box.dataset.iotId) + "?scheme=" + scheme,
                            { method: "POST", credentials: "same-origin" });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || ("HTTP " + res.status));
    return body.url;
  }

  async function play(scheme) {
    stop();
    say("starting " + scheme.toUpperCase() + "…");
    try {
      const url = await playUrl(scheme);
      if (scheme === "hls") {
        if (window.Hls && Hls.isSupported()) {
          const hls = new Hls(HLS_CONFIG);
          hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) say("HLS error: " + d.details); });
          hls.loadSource(url);
          hls.attachMedia(video);
          player = hls;
        } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
          video.src = url;  // Safari plays HLS natively
        } else {
          throw new Error("this browser cannot play HLS");
        }
      } else {
        if (!window.mpegts || !mpegts.isSupported()) throw new Error("this browser cannot play FLV");
        const p = mpegts.createPlayer({ type: "flv", isLive: true, url: url },
                                      { enableStashBuffer: false, liveBufferLatencyChasing: true });
        p.on(mpegts.Events.ERROR, (type, detail) => say("FLV error: " + type + " " + detail));
        p.attachMediaElement(video);
        p.load();
        player = p;
      }
      box.dataset.scheme = scheme;
      await video.play().catch(() => {});
      say("playing " + scheme.toUpperCase());
    } catch (err) {
      say("cannot play: " + err.message);
    }
  }

  for (const b of document.querySelectorAll("button[data-scheme]")) {
    b.addEventListener("click", () => play(b.dataset.scheme));
  }
  window.addEventListener("pagehide", stop);
  // Opening a camera shows it: start the low-latency HLS view at once (muted, so browsers
  // allow autoplay); the buttons switch protocol.
  play("hls");
})();
