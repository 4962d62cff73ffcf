// A fingerprint of what a cell's output shows, leaving out the controls themselves (a slider's own
// readout changes when it moves; that alone must not count as "the output changed").
(cell) => {
  const area = cell.querySelector('.jp-Cell-outputArea');
  if (!area) return '';
  const controls = [
    '.widget-slider', '.widget-hslider', '.widget-vslider', '.widget-button', 'button', '.widget-dropdown',
    '.widget-toggle-buttons', '.widget-checkbox', '.widget-toggle-button', '.widget-text', '.widget-textarea',
    '.widget-select', '.widget-radio', '.widget-play', '.widget-colorpicker', '.widget-datepicker',
    '.modebar-container', '.hoverlayer',
  ].join(',');
  const copy = area.cloneNode(true);
  copy.querySelectorAll(controls).forEach((e) => e.remove());
  // Plot data straight from plotly's graph divs; keys plotly adds for itself (_..., uid) are dropped.
  const plots = [...area.querySelectorAll('.js-plotly-plot')].map((gd) => JSON.stringify(
    gd.data ?? [], (key, value) => (key.startsWith('_') || key === 'uid' ? undefined : value)));
  const images = [...copy.querySelectorAll('img')].map((img) => img.src);
  const whole = JSON.stringify([copy.innerText ?? copy.textContent, plots, images]);
  let hash = 2166136261;  // FNV-1a, so a 5 MB figure does not travel back to Python on every poll
  for (let i = 0; i < whole.length; i++) {
    hash ^= whole.charCodeAt(i);
    hash = Math.imul(hash, 16777619) >>> 0;
  }
  return `${whole.length}:${hash}`;
}
