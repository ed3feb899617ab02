"""The lists' pagination (REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"])."""

from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """DRF's, except that an empty `?page=` is what any other page that is not a number is, a 404 ("Invalid
    page."), where DRF answered page 1: the schema says the page is an integer."""

    def get_page_number(self, request, paginator):
        if request.query_params.get(self.page_query_param) == "":
            return ""  # Django's paginator refuses it
        return super().get_page_number(request, paginator)
