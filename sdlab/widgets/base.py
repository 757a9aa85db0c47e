"""What every explorer shares: state in plain attributes, one computation at a time, errors shown in the widget.

An explorer keeps what it computes from in plain attributes (`explorer.prompt`, `explorer.seed`, ...), and
its controls are views of them. `refresh()` computes from the attributes now, in the calling thread: tests
and scripts set attributes, call it, and read `explorer.image` and `explorer.error`. A control the user
changes sets its attribute and calls `request()`, which computes in a worker thread: changes within
`debounce` seconds of each other become one computation, at most one computation runs at a time, and
changes that arrive while one runs make exactly one more run after it, with the latest values. While a
generation runs, a progress bar counts the UNet's calls (one per denoising step). An exception raised by
the computation becomes `explorer.error`, shown in the widget as sdlab's message; the widget stays alive and
keeps its last good image.
"""

from __future__ import annotations

import html
import threading
import time
import warnings
import weakref
from contextlib import contextmanager

import ipywidgets as widgets
from transformers.utils import logging as hf_logging

from .. import align
from ..toymodel.tokenizer import check_prompts as warn_prompts

_PIPE_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PIPE_LOCKS_LOCK = threading.Lock()


def pipe_lock(pipe) -> threading.Lock:
    """The lock that keeps two explorers from running one pipeline at once (each installs its own attention
    processors on the UNet for the length of a generation)."""
    with _PIPE_LOCKS_LOCK:
        return _PIPE_LOCKS.setdefault(pipe, threading.Lock())


def check_prompts(pipe, prompts) -> None:
    """sdlab's warnings about `prompts` (longer than the text encoder reads, or, for the toy model, words it never
    saw) as a `ValueError` with the same message: an explorer shows the picture the prompt asks for, or says
    why it cannot; it never shows a truncated prompt's picture as if it were the prompt's. (transformers' own
    log line about the length is kept off stderr meanwhile: the message says it.)"""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for prompt in prompts:
                align.tokenize(pipe.tokenizer, prompt)
            warn_prompts(pipe, prompts)
    finally:
        hf_logging.set_verbosity(verbosity)
    if caught:
        raise ValueError(str(caught[0].message))


class Explorer:
    """Base of the explorers; a subclass builds `self.widget`, binds controls with `control`, and implements
    `compute` (read the attributes, set the results) and `show` (put the results into the widgets)."""

    debounce: float = 0.15
    """Seconds a requested refresh waits for more changes before it starts."""

    def __init__(self):
        self.error: str | None = None
        """The message of the last computation's exception (sdlab's own), or None after a good one."""
        self.warnings: list[str] = []
        """UserWarnings of the last computation (shown under the controls)."""
        self.computations = 0
        """Computations started so far (each `refresh`, and each run of the worker)."""
        self.generations = 0
        """Pipeline runs started so far (a change that only redraws does not start one)."""
        self._lock = threading.Lock()
        self._version, self._working, self._thread = 0, False, None
        self._quiet_thread = None
        self._controls: dict = {}
        self.status = widgets.HTML(layout=widgets.Layout(min_height="1.5em"))
        self.status.add_class("sdlab-status")
        self.progress = widgets.IntProgress(min=0, max=1, value=0, description="",
                                            layout=widgets.Layout(visibility="hidden", width="40%"))
        self.progress.add_class("sdlab-progress")
        self.widget = None

    # -- controls as views of attributes -------------------------------------------------------------------
    def control(self, name: str, widget, to_widget=None, from_widget=None):
        """Make `widget` a view of the attribute `name`: it shows the attribute (through `to_widget`), and a
        change the user makes sets the attribute (through `from_widget`) and requests a refresh."""
        self._controls[name] = (widget, to_widget)
        widget.value = to_widget(getattr(self, name)) if to_widget else getattr(self, name)

        def changed(change):
            if self.quiet():
                return
            setattr(self, name, from_widget(change["new"]) if from_widget else change["new"])
            self.request()

        widget.observe(changed, names="value")
        return widget

    @contextmanager
    def quietly(self):
        """Changes made to controls in this block (by this thread) are the explorer's own, not the user's."""
        self._quiet_thread = threading.get_ident()
        try:
            yield
        finally:
            self._quiet_thread = None

    def quiet(self) -> bool:
        """True inside `quietly()` in this thread."""
        return self._quiet_thread == threading.get_ident()

    def show_values(self) -> None:
        """Put the attributes into their controls (after a test or a script set them)."""
        with self.quietly():
            for name, (widget, to_widget) in self._controls.items():
                value = to_widget(getattr(self, name)) if to_widget else getattr(self, name)
                if widget.value != value:
                    widget.value = value

    # -- computing ----------------------------------------------------------------------------------------
    def compute(self) -> None:  # pragma: no cover - every explorer overrides it
        raise NotImplementedError

    def show(self) -> None:  # pragma: no cover - every explorer overrides it
        raise NotImplementedError

    def refresh(self):
        """Compute from the attributes now, in this thread, and show the result or the error; returns self."""
        self.show_values()
        self._run()
        return self

    def request(self) -> None:
        """Refresh soon in a worker thread; see the module docstring for how changes are merged."""
        with self._lock:
            self._version += 1
            if self._working:
                return
            self._working = True
            self._thread = threading.Thread(target=self._work, name=f"{type(self).__name__} refresh", daemon=True)
        self._thread.start()

    def wait(self, timeout: float = 120.0) -> None:
        """Block until every requested refresh has run (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                working, thread = self._working, self._thread
            if not working:
                return
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"{type(self).__name__} still computing after {timeout} s")

    def _work(self) -> None:
        try:
            while True:
                time.sleep(self.debounce)
                with self._lock:
                    seen = self._version
                self._run()
                with self._lock:
                    if self._version == seen:
                        self._working = False
                        return
        except BaseException:
            with self._lock:
                self._working = False
            raise

    def _run(self) -> None:
        self.computations += 1
        self.status.value = "<i>computing…</i>"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.compute()
            self.error = None
            self.warnings = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
        except Exception as e:  # shown in the widget; the widget lives on
            self.error = str(e) or type(e).__name__
        finally:
            self.progress.layout.visibility = "hidden"
        try:
            self.show()
        except Exception as e:  # a result the widgets cannot take is an error like any other
            self.error = f"{type(e).__name__}: {e}"
        self.status.value = self.status_html()

    def status_html(self) -> str:
        if self.error:
            return f'<span class="sdlab-error" style="color:#b00020">{html.escape(self.error)}</span>'
        return "".join(f'<span style="color:#8a6d00">warning: {html.escape(w)}</span><br>' for w in self.warnings)

    @contextmanager
    def generating(self, pipe, steps: int, what: str):
        """Hold `pipe` for one generation of `steps` steps: count them on the progress bar (a forward hook on
        the UNet, removed after), keep the pipeline's own tqdm bar quiet, and count the generation."""
        with pipe_lock(pipe):
            self.generations += 1
            self.progress.max, self.progress.value, self.progress.description = max(steps, 1), 0, what
            self.progress.layout.visibility = "visible"

            def step(module, args, output):
                self.progress.value = min(self.progress.value + 1, self.progress.max)

            handle = pipe.unet.register_forward_hook(step)
            config = dict(getattr(pipe, "_progress_bar_config", {}))
            pipe.set_progress_bar_config(**{**config, "disable": True})
            try:
                yield
            finally:
                handle.remove()
                pipe.set_progress_bar_config(**config)

    def _repr_mimebundle_(self, **kwargs):
        """A notebook cell that ends with the explorer shows its widget."""
        return self.widget._repr_mimebundle_(**kwargs)
