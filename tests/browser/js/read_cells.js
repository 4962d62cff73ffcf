// What each notebook cell shows, read from the page: prompt, errors, widget views, plain-text outputs.
() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const broken = (text) => text.includes('Loading widget...') || text.includes('Error displaying widget');
  return cells.map((cell, index) => {
    const prompt = cell.querySelector('.jp-InputPrompt')?.textContent.trim() ?? '';
    // Top-level outputs only; an Output widget nests further output areas inside them.
    const outputs = [...cell.querySelectorAll(
      '.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output')];
    // Errors anywhere, including tracebacks a callback printed into an Output widget.
    const errors = [...cell.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')]
      .map((e) => e.innerText.trim().split('\n').filter((l) => l.trim()).slice(-1)[0] ?? '(empty error)');
    const stderrTracebacks = [...cell.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map((e) => e.innerText).filter((t) => t.includes('Traceback (most recent call last)'))
      .map((t) => t.trim().split('\n').slice(-1)[0]);
    return {
      index,
      kind: cell.classList.contains('jp-CodeCell') ? 'code' : 'other',
      executed: /^\[\d+\]:$/.test(prompt),
      errors: [...errors, ...stderrTracebacks],
      text: cell.querySelector('.jp-Cell-outputArea')?.innerText ?? '',
      // ipywidgets draws this "Click to show javascript error." box when a view cannot be created,
      // e.g. when the front-end module of a widget (anywidget for plotly's FigureWidget) is missing.
      error_views: cell.querySelectorAll('.jupyter-widgets-error-widget').length,
      widget_views: outputs.filter(
        (o) => o.querySelector('.jupyter-widgets') && !broken(o.innerText)
          && !o.querySelector('.jupyter-widgets-error-widget')).length,
      plain_texts: outputs.filter((o) => o.dataset.mimeType === 'text/plain').map((o) => o.innerText.trim()),
    };
  });
}
