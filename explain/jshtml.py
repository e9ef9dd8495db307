"""Matplotlib animations as HTML that plays offline: the player's buttons as text, no icon font from the web.

`anim.to_jshtml()` embeds every frame, but draws its buttons with Font Awesome icons loaded from a CDN: opened
without network (a handout from file://, a classroom behind a firewall) the buttons are blank. `offline_jshtml`
rewrites that HTML (the stylesheet link goes, each icon becomes a character); `animation_html(anim)` does both.
"""
from __future__ import annotations

import re

# Font Awesome class -> a character every system font has
ICONS = {"fa-minus": "−", "fa-plus": "+", "fa-fast-backward": "⇤", "fa-step-backward": "◂|",
         "fa-step-forward": "|▸", "fa-fast-forward": "⇥", "fa-pause": "❚❚", "fa-play": "▶"}

_FONT_LINK = re.compile(r'<link[^>]*href="https?://[^"]*font-awesome[^"]*"[^>]*>', re.S)
_ICON = re.compile(r'<i class="fa ([\w-]+)( fa-flip-horizontal)?"></i>')


def _icon(m: re.Match) -> str:
    if m.group(2):                      # "play backwards" is a flipped play icon
        return "◀"
    return ICONS.get(m.group(1), m.group(1).removeprefix("fa-"))


def offline_jshtml(page: str) -> str:
    """HTML from FuncAnimation.to_jshtml() with the icon font's link removed and its icons as characters."""
    return _ICON.sub(_icon, _FONT_LINK.sub("", page))


def animation_html(anim, **kwargs):
    """An IPython HTML object that plays `anim` (a FuncAnimation) with working buttons, online or not."""
    from IPython.display import HTML
    return HTML(offline_jshtml(anim.to_jshtml(**kwargs)))


__all__ = ["ICONS", "offline_jshtml", "animation_html"]
