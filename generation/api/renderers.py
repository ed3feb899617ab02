"""How the API answers a browser: DRF's browsable API, under the site's Content-Security-Policy loosened for it."""

from rest_framework import renderers


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF's browsable API. Its template has inline styles and an inline onclick (the logout link): these pages
    allow both (style-src and script-src-attr 'unsafe-inline'), never an inline <script>, which stays refused."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None:
            # What django-csp's @csp_update decorator sets; a renderer has no view function to decorate.
            response._csp_update = {"style-src": ["'unsafe-inline'"], "script-src-attr": ["'unsafe-inline'"]}
        return super().render(data, accepted_media_type, renderer_context)
