"""fedvit's model server: the paper's cloud (Fig. 1), holding only encrypted models and seeing only encrypted images."""
