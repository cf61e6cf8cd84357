"""The recommender service: the catalog and user state in Qdrant."""
