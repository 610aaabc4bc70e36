"""Speed harnesses and the prepared GPU check: they import the library; nothing imports them."""
