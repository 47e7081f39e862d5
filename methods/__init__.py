"""Built-in mixing methods. Importing this package registers each of them."""

from methods import fixed, natural, stratified  # noqa: F401
