"""Parts of a tab that follow the feed all the time but write to their models only while shown.

Every model change is a message to the browser, and BokehJS applies it (re-renders the view,
often re-lays out the page) even inside a hidden tab: measured on the Jobs tab with 250
workers, the live page's summary and task stream behind it took 60-500 ms of the browser's
time per refresh and held up the Jobs row queued behind them. A :class:`Held` part keeps its
state from every event but, while its tab is hidden, only notes that its models are stale;
showing the tab writes them once, from the state as it is then.
"""

from __future__ import annotations


class Held:
    """A part whose ``publish`` writes its state to its models; ``changed`` calls it when shown."""

    shown = True
    stale = False

    def publish(self) -> None:
        """Bring the models up to date with the state (on the document's loop)."""
        raise NotImplementedError

    def changed(self) -> None:
        """The state changed: written now if shown, else when shown again."""
        if self.shown:
            self.publish()
        else:
            self.stale = True

    def set_shown(self, shown: bool) -> None:
        self.shown = shown
        if shown and self.stale:
            self.stale = False
            self.publish()
