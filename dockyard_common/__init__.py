"""What dockyardd, the shim and dock share, importing none of them."""
