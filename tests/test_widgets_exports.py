import gpt2lab.widgets as widgets


def test_every_exported_widget_resolves():
    import ipywidgets
    for name in widgets.__all__:
        cls = getattr(widgets, name)
        assert issubclass(cls, ipywidgets.Widget), name
