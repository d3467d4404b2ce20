"""Digital twin of a chilled-water data-centre cooling plant."""
