"""One SQL repository per aggregate; `adapters.storage.store.SqlStore` composes them."""
