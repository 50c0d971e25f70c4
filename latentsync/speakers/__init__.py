"""Who is who: speakers, face tracks and the mapping between them."""
