// Set-up for the Jupyter widgets that the HTML book renders from the state saved in the notebooks.
// _config.yml (nb_ipywidgets_js) loads this file after require.js and before @jupyter-widgets/html-manager's
// embed-amd.js, on the pages that show widgets. It fixes two things that html-manager 1.0.x gets wrong here.
(function () {
  "use strict";

  // 1. embed-amd.js looks for its icon fonts next to the address requirejs gives its modules, which by default
  //    is the page's own folder (so every font request fails). Point the package's modules at its CDN folder.
  const htmlManager = document.currentScript && document.currentScript.dataset.htmlManager;
  if (window.requirejs && htmlManager) {
    window.requirejs.config({ paths: { "@jupyter-widgets/html-manager": htmlManager } });
  }

  // 2. Widget labels are typeset with MathJax 2's MathJax.Hub.Queue, but the book loads MathJax 3, which has no
  //    Hub: give it one that forwards to MathJax 3's typesetPromise. Labels rendered before MathJax has started
  //    are typeset by MathJax's own first pass over the page.
  if (window.MathJax === undefined) {
    return; // a page without mathematics: html-manager does not typeset at all
  }
  const hub = {
    Queue(command) {
      const element = Array.isArray(command) ? command[2] : undefined;
      if (element && typeof window.MathJax.typesetPromise === "function") {
        window.MathJax.typesetPromise([element]).catch((error) => console.warn("MathJax:", error));
      }
    },
  };
  const config = window.MathJax; // still the configuration object: MathJax 3 loads deferred
  const startup = config.startup || {};
  config.Hub = hub;
  config.startup = Object.assign({}, startup, {
    ready() {
      if (typeof startup.ready === "function") {
        startup.ready();
      } else {
        window.MathJax.startup.defaultReady();
      }
      window.MathJax.Hub = hub;
    },
  });
})();
